"""Several hosts, driven tick by tick: load spreading, moving cases off a host that cannot
be reached, one poll command per host."""

from pathlib import Path

import pytest

from caseflow.core.engine import Engine
from caseflow.errors import HostError, TransientError
from caseflow.transports.local import LocalTransport
from harness import JOB
from test_engine import Clock, run_until, state_of


class Down(TransientError):
    unreachable = True


class HostTransport(LocalTransport):
    """A local "host" whose uploads can be made to fail; counts commands."""

    def __init__(self, name, root):
        super().__init__(name, root)
        self.fail_uploads_with = None
        self.fail_commands_with = None  # every command too (a host down, not one upload)
        self.uploads = []
        self.commands = 0

    def upload_dir(self, local_dir, remote_path, manifest, progress=None):
        self.uploads.append(Path(local_dir).name)
        if self.fail_uploads_with is not None:
            # the host went down (or began to refuse us) during the upload: its commands,
            # the probes among them, fail from now on too (with them answering, the host was
            # cleared after one probe interval of the test's clock, and a later case went
            # there when the first took long: a failure of the full suite on a loaded machine)
            self.fail_commands_with = self.fail_uploads_with
            raise self.fail_uploads_with
        return super().upload_dir(local_dir, remote_path, manifest, progress)

    def run(self, argv, timeout=60.0):
        self.commands += 1
        if self.fail_commands_with is not None:
            raise self.fail_commands_with
        return super().run(argv, timeout)


@pytest.fixture
def two_hosts(ws):
    for key in ("groups", "transport", "backend"):
        ws.settings.pop(key)
    hosts = {}
    for name in ("east", "west"):
        (ws.remote / name).mkdir()
        hosts[name] = {"transport": {"kind": "local", "root": f"remote/{name}"},
                       "backend": {"kind": "direct", "command": JOB.replace("{ctl}", str(ws.ctl))},
                       "groups": {"gpu_a": {"slots": 2}}}
    # health probes an hour apart: the tests count the commands of polls and steps
    ws.write_config(hosts=hosts, retry={"initial_seconds": 1, "max_seconds": 30},
                    health_seconds=3600)
    engines = []

    def make():
        config = ws.config()
        engine = Engine(config, clock=Clock())
        for name, host in engine.hosts.items():
            host._transport = HostTransport(name, str(ws.remote / name))
        engine.start(workers=False)
        engines.append(engine)
        return engine
    yield make
    for e in engines:
        e.shutdown()
        e.store.close()


def test_cases_spread_over_the_hosts_and_each_is_polled_with_one_command(ws, two_hosts):
    engine = two_hosts()
    names = [f"spread{i}" for i in range(4)]
    for name in names:
        ws.drop_case(name, hold=name)
    run_until(engine, engine.clock, lambda: all(state_of(ws, n) == "running" for n in names),
              step=0.5)
    on = sorted(ws.case(n).host for n in names)
    assert on == ["east", "east", "west", "west"]
    before = {n: h.transport.commands for n, h in engine.hosts.items()}
    engine.clock.advance(60)
    engine.tick()
    after = {n: h.transport.commands for n, h in engine.hosts.items()}
    assert {n: after[n] - before[n] for n in after} == {"east": 1, "west": 1}
    for name in names:
        ws.release(name)
    run_until(engine, engine.clock, lambda: all(state_of(ws, n) == "success" for n in names),
              step=0.5)


def test_a_case_not_uploaded_yet_leaves_an_unreachable_host(ws, two_hosts):
    engine = two_hosts()
    east = engine.hosts["east"].transport
    east.fail_uploads_with = Down("east unreachable (connection refused)")
    ws.drop_case("mover")
    run_until(engine, engine.clock, lambda: state_of(ws, "mover") == "success", step=0.5)
    row = ws.case("mover")
    assert (row.host, row.reason) == ("west", None)
    assert east.uploads == ["mover"]  # tried once there, then moved
    trail = [(h.src, h.dst, h.trigger) for h in ws.store.history(row.id)]
    assert ("gpu_locked", "queued", "requeue") in trail
    requeue = next(h for h in ws.store.history(row.id) if h.trigger == "requeue")
    assert "host east" in requeue.detail and "unreachable" in requeue.detail
    # east is avoided for a while: the next case goes straight to west
    ws.drop_case("second")
    run_until(engine, engine.clock, lambda: state_of(ws, "second") == "success", step=0.5)
    assert ws.case("second").host == "west" and east.uploads == ["mover"]
    assert all(s.case_id is None for s in ws.store.slots())


def test_a_paused_host_sends_its_waiting_cases_elsewhere(ws, two_hosts):
    engine = two_hosts()
    east = engine.hosts["east"].transport
    east.fail_uploads_with = HostError("authentication failed")
    ws.drop_case("paused")
    run_until(engine, engine.clock, lambda: state_of(ws, "paused") == "success", step=0.5)
    assert ws.case("paused").host == "west"
    assert [p[0] for p in ws.store.host_problems()] == ["east"]


def test_uploaded_cases_stay_with_their_host(ws, two_hosts):
    engine = two_hosts()
    ws.drop_case("stays", hold="stays")
    run_until(engine, engine.clock, lambda: state_of(ws, "stays") == "running", step=0.5)
    home = ws.case("stays").host
    transport = engine.hosts[home].transport
    real_run = transport.run
    transport.run = lambda argv, timeout=60.0: (_ for _ in ()).throw(Down("gone"))
    for _ in range(5):
        engine.clock.advance(1)
        engine.tick()
    row = ws.case("stays")
    assert (row.state, row.host) == ("running", home) and row.attempts >= 1
    transport.run = real_run
    ws.release("stays")
    run_until(engine, engine.clock, lambda: state_of(ws, "stays") == "success", step=5)


def test_host_settings_mistakes_name_the_key(ws, two_hosts):
    from caseflow.config import load_config
    from caseflow.errors import ConfigError
    hosts = ws.settings["hosts"]
    cases = [
        ({"hosts": {**hosts, "east": {**hosts["east"], "gpus": 2}}}, "hosts.east.gpus"),
        ({"hosts": {"east": {**hosts["east"], "transport": {**hosts["east"]["transport"],
                                                             "name": "other"}}}},
         "hosts.east.transport.name"),
        ({"hosts": {"east": {k: v for k, v in hosts["east"].items() if k != "groups"}}},
         "hosts.east.groups"),
        ({"hosts": hosts, "groups": {"gpu_a": 1}}, "groups"),
        ({"hosts": {}}, "hosts"),
    ]
    for changes, key in cases:
        ws.write_config(**changes)
        with pytest.raises(ConfigError) as err:
            load_config(ws.config_path)
        assert str(err.value).startswith(f"{ws.config_path}: {key}:"), str(err.value)
        ws.settings.pop("groups", None)
    ws.write_config(hosts=hosts)
    config = load_config(ws.config_path)
    assert [h.name for h in config.hosts] == ["east", "west"]
    assert [(g.name, g.slots) for g in config.groups] == [("gpu_a", 4)]


def test_the_shipped_multi_host_example_is_valid(tmp_path):
    import yaml
    from caseflow.config import load_config
    root = Path(__file__).resolve().parents[1]
    data = yaml.safe_load((root / "config" / "multi_host.yaml").read_text())
    (tmp_path / "inbox").mkdir()
    data.update(inbox=str(tmp_path / "inbox"), database=str(tmp_path / "db"))
    data["results"]["folder"] = str(tmp_path / "results")
    path = tmp_path / "multi.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    assert [h.name for h in config.hosts] == ["gpu1", "gpu2"]
    assert config.hosts[1].backend.command == config.hosts[0].backend.command
    assert [(g.name, g.slots) for g in config.groups] == [("gpu_a", 6), ("gpu_big", 1)]
    assert config.host("gpu2").transport.name == "gpu2"


def test_slurm_groups_do_not_take_devices(ws):
    from caseflow.config import load_config
    from caseflow.errors import ConfigError
    ws.write_config(backend={"kind": "slurm", "command": "true"},
                    groups={"gpu_a": {"slots": 2, "devices": [0, 1]}})
    with pytest.raises(ConfigError, match=r"groups\.gpu_a\.devices: not used with the slurm"):
        load_config(ws.config_path)
