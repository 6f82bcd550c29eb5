"""`caseflow run` as a real process: one daemon per database, clean stop, crash and resume."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import DEADLINE, wait_for


class Proc:
    def __init__(self, ws):
        self.ws = ws
        self.log = ws.root / f"daemon-{len(list(ws.root.glob('daemon-*.log')))}.log"
        self.p = subprocess.Popen([sys.executable, "-m", "caseflow.cli", "run", "-c",
                                   str(ws.config_path)], stdout=subprocess.DEVNULL,
                                  stderr=open(self.log, "wb"), start_new_session=True)
        wait_for(lambda: "caseflow running" in self.text() or self.p.poll() is not None,
                 what="the daemon to start")

    def text(self):
        return self.log.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        return self.p.wait(timeout=DEADLINE)


@pytest.fixture
def procs(ws):
    started = []

    def start():
        p = Proc(ws)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.p.poll() is None:
            p.p.kill()
            p.p.wait()


def test_a_second_daemon_on_the_same_database_refuses(ws, procs):
    first = procs()
    assert first.p.poll() is None
    proc = ws.cli("run", timeout=DEADLINE)
    assert proc.returncode == 1
    assert f"pid {first.p.pid}" in proc.stderr and "already running" in proc.stderr
    assert first.p.poll() is None  # the first one is untouched
    assert first.stop() == 0


def test_sigterm_stops_cleanly_and_releases_the_lock(ws, procs):
    first = procs()
    assert first.stop(signal.SIGTERM) == 0
    assert "stopped" in first.text()
    second = procs()
    assert second.p.poll() is None
    assert second.stop(signal.SIGINT) == 0


def test_a_killed_daemon_resumes_every_case_and_runs_each_job_once(ws, procs):
    runs = ws.ctl / "runs"
    ws.write_config(backend={"kind": "direct", "command":
                             f'echo "$CASEFLOW_CASE_NAME" >> {runs}; '
                             f'while [ ! -e {ws.ctl}/go ]; do sleep 0.05; done'})
    first = procs()
    for name in ("k1", "k2", "k3"):
        ws.drop_case(name, group="gpu_a" if name != "k3" else "gpu_b")
    for name in ("k1", "k2", "k3"):
        ws.wait_state(name, "running")
    first.stop(signal.SIGKILL)
    ws.drop_case("k4")  # arrives while no daemon runs
    (ws.ctl / "go").touch()
    second = procs()
    for name in ("k1", "k2", "k3", "k4"):
        ws.wait_state(name, "success")
    assert second.stop() == 0
    assert sorted(runs.read_text().split()) == ["k1", "k2", "k3", "k4"]
    assert all(s.case_id is None for s in ws.store.slots())


def test_stopping_with_a_case_in_flight_loses_nothing(ws, procs):
    first = procs()
    ws.drop_case("inflight", hold="t1")
    ws.wait_state("inflight", "running")
    assert first.stop() == 0
    assert ws.case("inflight").state == "running"
    ws.release("t1")
    second = procs()
    ws.wait_state("inflight", "success")
    assert second.stop() == 0


def test_status_json_has_the_documented_fields(ws, procs):
    d = procs()
    ws.drop_case("json-me")
    ws.wait_state("json-me", "success")
    out = json.loads(ws.cli("status", "--json", check=True).stdout)
    assert {"id", "name", "state", "group", "slot", "task_id", "reason", "updated_at"} <= set(out[0])
    assert (out[0]["name"], out[0]["state"], out[0]["group"]) == ("json-me", "success", "gpu_a")
    d.stop()


def test_sighup_reopens_the_log_file_after_logrotate_moved_it_and_nothing_is_lost(ws, procs,
                                                                                 tmp_path):
    """config/caseflow.logrotate run by Debian's logrotate (its path, owner and signal command
    pointed at this daemon): the old lines stay in the rotated file, the daemon writes on into
    the new one, and SIGHUP changes nothing else (the daemon runs on, its cases go on)."""
    log_file = tmp_path / "logs" / "caseflow.log"
    log_file.parent.mkdir()
    ws.write_config(log={"file": str(log_file), "level": "INFO"})
    daemon = procs()
    ws.drop_case("before")
    ws.wait_state("before", "success")
    conf = (Path(__file__).resolve().parent.parent / "config" / "caseflow.logrotate").read_text()
    assert "/data/caseflow/caseflow.log {" in conf and "create 0640 caseflow caseflow" in conf
    conf = (conf.replace("/data/caseflow/caseflow.log", str(log_file))
                .replace("create 0640 caseflow caseflow", "create 0640 root root")
                .replace("systemctl kill --kill-whom=main --signal=HUP caseflow.service",
                         f"kill -HUP {daemon.p.pid}"))
    (tmp_path / "caseflow.logrotate").write_text(conf)
    res = subprocess.run(["logrotate", "--force", "--state", str(tmp_path / "state"),
                          str(tmp_path / "caseflow.logrotate")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rotated = log_file.with_name("caseflow.log.1")  # delaycompress: not compressed yet
    wait_for(lambda: "SIGHUP: log file reopened" in log_file.read_text(), what="the reopen")
    ws.drop_case("after")
    ws.wait_state("after", "success")
    assert daemon.p.poll() is None  # SIGHUP did not stop it
    assert daemon.stop() == 0
    old, new = rotated.read_text(), log_file.read_text()
    assert "caseflow running" in old and "before" in old and "after" not in old
    assert "caseflow running" not in new and "after" in new and "stopped" in new
    # every line the daemon wrote to stderr is in one of the two files, once
    lines = [line for line in daemon.text().splitlines() if line.strip()]
    written = old.splitlines() + new.splitlines()
    assert sorted(written) == sorted(lines)
