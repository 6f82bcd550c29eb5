"""Steps of features/multi_host.feature: two real sshd hosts, each behind a relay that can
cut it off, with the direct runner on each."""

from pathlib import Path

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403
from bdd_steps import TERMINAL, cli_json  # noqa: E402
from harness import JOB, wait_for  # noqa: E402
from sshd import Relay, SSHServer, transport_settings  # noqa: E402

scenarios("multi_host.feature")


class Host:
    """A GPU host of the scenario's own: an sshd behind a relay, with its own remote root."""

    def __init__(self, name: str, ws):
        self.name = name
        self.server = SSHServer(ws.root / f"host-{name}").start()
        self.relay = Relay(self.server.port)
        self.known_hosts = self.server.write_known_hosts(
            ws.root / f"host-{name}" / "known_hosts_relay", port=self.relay.port)
        self.root = ws.remote / name
        self.root.mkdir()

    def settings(self, ws, slots: int) -> dict:
        transport = transport_settings(self.server, self.root, port=self.relay.port,
                                       known_hosts=str(self.known_hosts),
                                       reconnect_min_interval=0.5)
        transport.pop("name")
        return {"transport": transport,
                "backend": {"kind": "direct", "command": JOB.replace("{ctl}", str(ws.ctl))},
                "groups": {"gpu_a": {"slots": slots}}}

    def launched(self) -> dict[int, int]:
        """How many times each case's job was started here, by case id."""
        counts: dict[int, int] = {}
        for marker in self.root.glob("*/.caseflow/launched"):
            case_id = int(marker.parent.parent.name.split("-", 1)[0])
            counts[case_id] = counts.get(case_id, 0) + 1
        return counts

    def close(self):
        self.relay.close()
        self.server.stop()


@pytest.fixture
def hosts(ws):
    made: dict[str, Host] = {}
    yield made
    for h in made.values():
        h.close()


def _names(prefix: str, count: int, start: int = 1) -> list[str]:
    return [f"{prefix}_{i:02d}" for i in range(start, start + count)]


@given(parsers.parse('two GPU hosts, "{a}" and "{b}", each with {slots:d} slots of gpu_a, '
                     'reached over SSH'))
def two_hosts(ws, hosts, a, b, slots):
    for name in (a, b):
        hosts[name] = Host(name, ws)
    for key in ("groups", "transport", "backend"):
        ws.settings.pop(key)
    ws.write_config(hosts={name: h.settings(ws, slots) for name, h in hosts.items()},
                    retry={"initial_seconds": 0.2, "max_seconds": 3})


@given(parsers.parse("{count:d} case folders whose jobs wait to be released were dropped into "
                     "the inbox"))
@when(parsers.parse("{count:d} case folders whose jobs wait to be released are dropped into "
                    "the inbox"))
def cases_dropped(ws, count):
    start = len(ws.cases()) + 1
    for name in _names("scan", count, start):
        ws.drop_case(name, hold=name)
        ws.wait_state(name, "detected", "stable", "queued", "gpu_locked", "uploaded", "running")


def host_of(ws, name) -> str | None:
    row = ws.case(name)
    return row.slot_host or row.host


@then(parsers.parse('{n:d} of the cases run on "{a}" and {m:d} on "{b}"'))
def spread(ws, n, a, m, b):
    for row in ws.cases():
        ws.wait_state(row.name, "running")
    on = [host_of(ws, r.name) for r in ws.cases()]
    assert (on.count(a), on.count(b)) == (n, m), on


@given(parsers.parse('one of them runs on "{a}" and the other on "{b}"'))
def one_each(ws, a, b):
    spread(ws, 1, a, 1, b)


@then("caseflow status shows the host of each case")
def status_shows_hosts(ws):
    lines = ws.cli("status", check=True).stdout.splitlines()
    header = lines[0].split()
    assert "HOST" in header
    col = header.index("HOST")
    for row in ws.cases():
        line = next(line for line in lines if f" {row.name} " in line)
        assert line.split()[col] == host_of(ws, row.name), line
    assert {c["name"]: c["host"] for c in cli_json(ws, "status")} == \
        {r.name: host_of(ws, r.name) for r in ws.cases()}


@then("caseflow resources shows which case holds each slot of each host")
def resources_show_hosts(ws, hosts):
    slots = cli_json(ws, "resources")
    assert sorted((s["host"], s["slot"]) for s in slots) == \
        sorted((h, i) for h in hosts for i in range(2))
    held = {s["case_name"]: s["host"] for s in slots if s["case_id"] is not None}
    assert held == {r.name: host_of(ws, r.name) for r in ws.cases()}


@when("all jobs are released")
def release_all(ws):
    for row in ws.cases():
        ws.release(row.name)


@then(parsers.parse("all {count:d} cases end in success"))
def all_succeed(ws, count):
    rows = ws.cases()
    assert len(rows) == count
    for row in rows:
        got = ws.wait_state(row.name, *TERMINAL)
        assert got.state == "success", (row.name, got.state, got.reason)


@then("each case was run exactly once, on the host that shows for it")
def run_once(ws, hosts):
    for row in ws.cases():
        starts = {name: h.launched().get(row.id, 0) for name, h in hosts.items()}
        assert sum(starts.values()) == 1, (row.name, starts)
        assert starts[row.host] == 1, (row.name, row.host, starts)
        result = Path(row.remote_path) / "output" / "result.txt"
        assert result.read_text().strip() == f"result of {row.id}"


@when(parsers.parse('the GPU host "{name}" cannot be reached any more'))
def host_cut_off(hosts, name):
    hosts[name].relay.refuse()
    hosts[name].relay.cut()


@when(parsers.parse('the GPU host "{name}" can be reached again'))
def host_back(hosts, name):
    hosts[name].relay.accept()


@then(parsers.parse('the {count:d} new cases go to "{good}" as its slots allow, none to "{bad}"'))
def new_cases_avoid(ws, hosts, count, good, bad):
    new = ws.cases()[-count:]
    free = 1  # the good host has 2 slots and runs one of the earlier cases

    def settled():
        rows = [ws.case(r.name) for r in new]
        running = [r for r in rows if r.state == "running"]
        queued = [r for r in rows if r.state == "queued"]
        return (len(running), len(queued)) == (free, count - free) and \
            all((r.slot_host or r.host) == good for r in running) and rows
    rows = wait_for(settled, what=f"{free} new case(s) running on {good}, the rest queued")
    started_on_bad = hosts[bad].launched()
    assert not any(r.id in started_on_bad for r in rows), started_on_bad
    # cases that tried the unreachable host were sent back to the queue, not failed
    for r in rows:
        assert r.reason is None
    held = [s for s in cli_json(ws, "resources") if s["host"] == bad and s["case_id"]]
    assert [s["case_name"] for s in held] == [ws.cases()[0].name]
