"""Host problems are visible at once (issue 27): every host is probed when the daemon starts,
then every `health_seconds` and soon after an error; a host that is not healthy has a line in
`caseflow status`, a banner on the page, a real `since`, metrics by kind, and the shipped alert
rules fire in a real Prometheus for their causes. Real sshd, real pueued, real Prometheus."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from caseflow import metrics
from gpu_host import GpuHost
from harness import DEADLINE, JOB, wait_for
from sshd import free_port, transport_settings
from test_metrics import ALERTS, scrape, tool, value
from webtools import WEB, get_json, request


def _when(iso_text: str) -> float:
    return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()


def _other_key_line(tmp_path: Path, port: int) -> str:
    """A known_hosts line for 127.0.0.1:port with a key the server does not have (its key
    changed, as a reinstalled host's does)."""
    key = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kind, b64 = Path(f"{key}.pub").read_text().split()[:2]
    return f"[127.0.0.1]:{port} {kind} {b64}\n"


@pytest.fixture
def gpu_host(tmp_path):
    hosts = []

    def make(**kw) -> GpuHost:
        host = GpuHost(tmp_path / f"h{len(hosts)}", **kw)
        hosts.append(host)
        return host
    yield make
    for h in hosts:
        h.close()


def _status_lines(ws) -> dict[str, str]:
    out = ws.cli("status", check=True).stdout
    return dict(re.findall(r"^host (\S+): (.*)$", out, re.M))


def test_each_kind_of_host_problem_shows_at_once_and_its_alert_fires(ws, sshd, gpu_host,
                                                                      tmp_path):
    """Four hosts, each with its own trouble, and no case at all: pueued stopped, nothing
    listening, a changed host key, a disk that is (by the setting) short of room. Each has a
    `caseflow status` line with a real `since`, a banner line, its metrics, and its alert
    rule (the shipped file, its thresholds cut to seconds) fires in a real Prometheus."""
    started = time.time()
    pueue = gpu_host()
    pueue.pueue.stop()
    job = JOB.replace("{ctl}", str(ws.ctl))
    rekeyed = tmp_path / "known_hosts_rekeyed"
    rekeyed.write_text(_other_key_line(tmp_path, sshd.port))
    for key in ("groups", "transport", "backend"):
        ws.settings.pop(key)
    hosts = {
        "stopped": {"transport": pueue.transport(ws.remote / "stopped"),
                    "backend": {"kind": "pueue", "command": job}},
        "gone": {"transport": transport_settings(sshd, ws.remote / "gone", port=free_port()),
                 "backend": {"kind": "direct", "command": job}},
        "rekeyed": {"transport": transport_settings(sshd, ws.remote / "rekeyed",
                                                    known_hosts=str(rekeyed)),
                    "backend": {"kind": "direct", "command": job}},
        "full": {"transport": transport_settings(sshd, ws.remote / "full"),
                 "backend": {"kind": "direct", "command": job}},
    }
    for i, (name, h) in enumerate(hosts.items()):
        h["transport"]["name"] = name
        h["groups"] = {f"g{i}": {"slots": 1}}
    # every file system here has less than a million GiB free: "full" is short of disk
    ws.write_config(hosts=hosts, low_disk_gib=1_000_000, web=WEB,
                    retry={"initial_seconds": 0.2, "max_seconds": 2})
    url = ws.start().web.url

    # Prometheus with the shipped rules, their thresholds cut from minutes to a second
    rules = ALERTS.read_text()
    rules = re.sub(r"> \d+ \* 60\b", "> 1", rules)
    rules = re.sub(r"for: \d+m\b", "for: 1s", rules)
    (tmp_path / "rules.yml").write_text(rules)
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [{"job_name": "caseflow", "scrape_interval": "1s",
                            "static_configs": [{"targets": [url.split("//")[1].rstrip("/")]}]}]}))
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([tool("prometheus"), f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                            stdout=log, stderr=log)
    api = f"http://127.0.0.1:{prom_port}"
    try:
        # the command line: one line per host, each with what it is and a real since
        expected = {"stopped": "work PAUSED (queue daemon down) since",
                    "gone": "UNREACHABLE since", "rekeyed": "work PAUSED (host key) since",
                    "full": "LOW ON DISK since"}

        def all_shown():
            lines = _status_lines(ws)
            return lines if all(lines.get(h, "").startswith(t) for h, t in expected.items()) \
                else None
        lines = wait_for(all_shown, what="a status line for each host's problem")
        for name, line in lines.items():
            since = _when(re.search(r"since (\S+):", line).group(1))
            assert started - 1 <= since <= time.time(), line
        assert "pueued -d" in lines["stopped"]  # what to do
        assert "caseflow check" in lines["gone"]
        assert "CHANGED" in lines["rekeyed"] and f"ssh-keygen -f {rekeyed}" in lines["rekeyed"]
        assert "GiB free" in lines["full"] and "make room" in lines["full"]

        html = request(url, "/")[2].decode()
        for name, head in expected.items():
            assert f"host {name}: {head}" in html, name
        api_hosts = {h["name"]: h for h in get_json(url, "/api/hosts")["hosts"]}
        assert {n: h["status"] for n, h in api_hosts.items()} == {
            "stopped": "paused", "gone": "unreachable", "rekeyed": "paused", "full": "disk_low"}
        assert api_hosts["full"]["free_bytes"] > 0

        first = scrape(url)
        for name, kind in (("stopped", "queue_down"), ("gone", "unreachable"),
                           ("rekeyed", "host_key"), ("full", "disk_low")):
            assert value(first, "caseflow_host_problem", host=name, kind=kind) == 1
            assert value(first, "caseflow_host_up", host=name) == int(name == "full")
        wait_for(lambda: value(scrape(url), "caseflow_host_paused_seconds", host="stopped")
                 > value(first, "caseflow_host_paused_seconds", host="stopped") + 1,
                 what="the paused seconds to grow")

        def firing():
            status, _, body = request(api, "/api/v1/alerts")
            alerts = json.loads(body)["data"]["alerts"] if status == 200 else []
            return {(a["labels"]["alertname"], a["labels"].get("host"))
                    for a in alerts if a["state"] == "firing"}

        def ready():
            try:
                return prom.poll() is not None or request(api, "/-/ready")[0] == 200
            except OSError:
                return False
        wait_for(ready, what="Prometheus to be ready")
        assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
        want = {("CaseflowHostPaused", "stopped"), ("CaseflowHostPaused", "rekeyed"),
                ("CaseflowHostUnreachable", "gone"), ("CaseflowHostKeyRefused", "rekeyed"),
                ("CaseflowHostDiskLow", "full")}
        wait_for(lambda: want <= firing(), what=f"the alerts {want} to fire (last: {firing()})")
        host_alerts = {f for f in firing() if f[0].startswith("CaseflowHost")}
        assert host_alerts == want, host_alerts  # and no other host's
    finally:
        prom.terminate()
        prom.wait(timeout=DEADLINE)
        log.close()


def test_a_case_waiting_for_a_stopped_pueued_says_so_and_goes_on_when_it_runs(ws, gpu_host):
    """pueued stopped before the daemon starts: the probe at the start shows it (no case
    needed); a case that arrives waits, saying for what; pueued started again, the line goes
    and the case ends in success."""
    host = gpu_host()
    host.pueue.stop()
    ws.write_config(transport=host.transport(ws.remote),
                    backend={"kind": "pueue", "command": JOB.replace("{ctl}", str(ws.ctl))},
                    retry={"initial_seconds": 0.2, "max_seconds": 2})
    ws.start()
    wait_for(lambda: _status_lines(ws).get("testhost", "").startswith(
        "work PAUSED (queue daemon down) since"), what="the status line of the stopped pueued")
    ws.drop_case("waits")

    def says_it_waits():
        rows = json.loads(ws.cli("status", "--json", check=True).stdout)
        return rows and "waiting for host testhost: pueue daemon not running" in \
            rows[0]["state_text"]
    wait_for(says_it_waits, what="the case to say that it waits for the host")
    shown = ws.cli("show", "waits", check=True).stdout
    assert "waiting for host testhost: pueue daemon not running" in shown
    host.pueue.start()
    ws.wait_state("waits", "success")
    wait_for(lambda: "testhost" not in _status_lines(ws), what="the host's line to go")


def test_probes_follow_health_seconds_and_a_wrong_host_key_shows_without_a_case(ws, sshd,
                                                                              tmp_path):
    """A wrong known_hosts shows at the start, with no case; once the file is fixed, the next
    probe clears the problem without a case or a restart; a healthy host is probed again
    every health_seconds (its transport counts the commands)."""
    wrong = tmp_path / "known_hosts"
    wrong.write_text(_other_key_line(tmp_path, sshd.port))
    ws.write_config(transport=transport_settings(sshd, ws.remote, known_hosts=str(wrong)),
                    health_seconds=1, retry={"initial_seconds": 0.2, "max_seconds": 1})
    ws.start()
    line = wait_for(lambda: _status_lines(ws).get("testhost"), what="the host key's line")
    assert line.startswith("work PAUSED (host key) since") and str(wrong) in line
    sshd.write_known_hosts(wrong)  # the right key, as the admin confirmed it
    wait_for(lambda: "testhost" not in _status_lines(ws), what="the next probe to clear it")
    host = ws.daemon.engine.hosts["testhost"]
    seen = host.transport.commands
    wait_for(lambda: host.transport.commands >= seen + 2, what="two more probes")


def test_a_host_without_its_queues_commands_is_paused_and_fails_no_case(ws, gpu_host):
    """backend.pueue names a client the host lacks: the probe at the start shows it (it was
    a debug line, and the first case failed for it and kept its slot for good: a review);
    a case waits for the host, saying so, and fails nothing."""
    host = gpu_host()
    ws.write_config(transport=host.transport(ws.remote),
                    backend={"kind": "pueue", "pueue": "/nonexistent/pueue",
                             "command": JOB.replace("{ctl}", str(ws.ctl))},
                    retry={"initial_seconds": 0.2, "max_seconds": 1})
    ws.start()
    line = wait_for(lambda: _status_lines(ws).get("testhost"), what="the host's status line")
    assert line.startswith("work PAUSED since") and "pueue is not installed" in line, line
    assert "backend.pueue" in line  # what to do
    ws.drop_case("waits")
    row = wait_for(lambda: (r := ws.case("waits")) and r.state in ("queued", "uploaded") and
                   "waiting for host testhost: pueue is not installed" in
                   json.loads(ws.cli("show", "waits", "--json", check=True).stdout)["state_text"]
                   and r, what="the case to wait for the host, saying why")
    assert row.reason is None


def test_a_host_no_longer_configured_leaves_no_problem_behind(ws, sshd):
    """A host that was unreachable when it was taken out of the config: its problem is not
    shown by `status` (nobody probes it any more), and the next start clears it from the
    store."""
    for key in ("groups", "transport", "backend"):
        ws.settings.pop(key)
    job = JOB.replace("{ctl}", str(ws.ctl))
    hosts = {"kept": {"transport": transport_settings(sshd, ws.remote / "kept"),
                      "backend": {"kind": "direct", "command": job}, "groups": {"g": {"slots": 1}}},
             "gone": {"transport": transport_settings(sshd, ws.remote / "gone", port=free_port()),
                      "backend": {"kind": "direct", "command": job}, "groups": {"g": {"slots": 1}}}}
    for name, h in hosts.items():
        h["transport"]["name"] = name
    ws.write_config(hosts=hosts)
    ws.start()
    wait_for(lambda: _status_lines(ws).get("gone", "").startswith("UNREACHABLE"),
             what="the unreachable host's line")
    ws.stop()
    del hosts["gone"]
    ws.write_config(hosts=hosts)
    assert "gone" not in _status_lines(ws)  # before any start
    ws.start()
    wait_for(lambda: all(name != "gone" for name, *_ in ws.store.host_problems()),
             what="the start to clear the removed host's problem")


def test_a_short_blip_keeps_a_stopped_queues_since_and_tells_once(ws, gpu_host, tmp_path):
    """pueued down all along, the host unreachable for a moment: the host stays paused for
    its queue with the same since, and on_host_paused ran once (a blip started the outage
    over and ran the hook again: a review)."""
    host = gpu_host()
    host.pueue.stop()
    told = tmp_path / "told"
    ws.write_config(transport=host.transport(ws.remote),
                    backend={"kind": "pueue", "command": JOB.replace("{ctl}", str(ws.ctl))},
                    health_seconds=1, retry={"initial_seconds": 0.2, "max_seconds": 2},
                    on_host_paused=f"echo \"$CASEFLOW_HOST\" >> {told}")
    ws.start()
    line = wait_for(lambda: _status_lines(ws).get("testhost", "").startswith(
        "work PAUSED (queue daemon down)") and _status_lines(ws)["testhost"],
        what="the stopped queue's line")
    since = re.search(r"since (\S+):", line).group(1)
    wait_for(lambda: told.exists(), what="the hook")
    errors = metrics.SSH_ERRORS.labels("testhost")
    before = errors._value.get()
    host.relay.refuse()  # the blip: connections cut, new ones refused
    wait_for(lambda: errors._value.get() >= before + 2, what="connections refused in the blip")
    host.relay.accept()
    engine = ws.daemon.engine.hosts["testhost"]
    after = time.monotonic()
    wait_for(lambda: engine.last_probe > after + 1, what="probes after the blip")
    line = _status_lines(ws)["testhost"]
    assert line.startswith(f"work PAUSED (queue daemon down) since {since}:"), line
    assert told.read_text() == "testhost\n"


def test_a_scripted_queue_without_its_commands_stays_paused_until_they_are_there(
        ws, monkeypatch, tmp_path):
    """A Slurm host whose commands the SSH user cannot find (a submit exits 127): the probe
    looks for them, so the pause stays until they are there (a probe that looked at nothing
    ended it at once, cases were sent there again and the hook ran at every round: a review).
    Here the "host" is this machine with a PATH that has a shell and its tools but no
    Slurm; then the whole PATH again (Slurm is installed for the test suite)."""
    from caseflow.core.engine import Engine
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "df", "tail", "dirname"):
        (bare / tool).symlink_to(shutil.which(tool))
    ws.write_config(backend={"kind": "slurm", "command": "true"},
                    groups={"gpu_a": {"slots": 2}, "gpu_b": {"slots": 1}})
    engine = Engine(ws.config())
    try:
        engine.start(workers=False)
        host = engine.first_host
        monkeypatch.setenv("PATH", str(bare))
        engine.health.probe(host)
        engine.health.probe(host)  # again: still paused, the same problem
        assert host.problem_kind == "config", host.problem
        assert "Slurm's commands are missing" in host.problem and "sbatch" in host.problem
        assert [p[3] for p in ws.store.host_problems()] == ["config"]
        assert not engine.health.usable_for(engine.config.groups[0].name)
        monkeypatch.undo()  # the commands are there again
        assert shutil.which("sbatch"), "Slurm's client is missing: run .ci/system-deps"
        host.next_probe = float("-inf")
        engine.health.probe(host)
        assert host.problem is None and ws.store.host_problems() == []
    finally:
        engine.shutdown()
        engine.store.close()
