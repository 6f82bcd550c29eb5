"""The command line as an operator uses it, against real daemons and a real database."""

import json
import os
from pathlib import Path

from harness import wait_for

ODD_NAMES = ["with space", "it's \"quoted\"", "$(touch CANARY)", "`touch CANARY`",
             "semi;colon|pipe", "-leading-dash", "ünïcödé ✓", "tab\there"]


def test_status_show_and_resources(ws):
    ws.start()
    ws.drop_case("one")
    ws.drop_case("two", exit_code=4)
    ws.wait_state("one", "success")
    ws.wait_state("two", "failure")
    status = ws.cli("status", check=True).stdout
    assert "one" in status and "success" in status and "job exited with code 4" in status
    only = json.loads(ws.cli("status", "--json", "--state", "failure", check=True).stdout)
    assert [c["name"] for c in only] == ["two"]
    show = json.loads(ws.cli("show", "two", "--json", check=True).stdout)
    assert show["reason"] == "job exited with code 4"
    assert [h["trigger"] for h in show["history"]][-1] == "fail"
    text = ws.cli("show", str(show["id"]), check=True).stdout
    assert "history:" in text and "lock_gpu" in text
    res = json.loads(ws.cli("resources", "--json", check=True).stdout)
    assert [(r["group"], r["slot"], r["device"], r["case_id"]) for r in res] == [
        ("gpu_a", 0, "0", None), ("gpu_a", 1, "1", None), ("gpu_b", 0, None, None)]


def test_unknown_and_ambiguous_cases(ws):
    ws.start()
    ws.drop_case("twin")
    ws.wait_state("twin", "success")
    os.rename(ws.inbox / "twin", ws.root / "twin-old")
    ws.drop_case("twin")  # same name, new folder: a new case
    wait_for(lambda: len(ws.cases("twin")) == 2 and ws.cases("twin")[1].state == "success")
    proc = ws.cli("show", "twin")
    assert proc.returncode == 1 and "names 2 cases" in proc.stderr
    proc = ws.cli("show", "nobody")
    assert proc.returncode == 1 and "no case" in proc.stderr


def test_retry_and_cancel_without_a_daemon_apply_at_once(ws):
    ws.start()
    ws.drop_case("again", exit_code=2)
    ws.wait_state("again", "failure")
    ws.drop_case("stuck", hold="never")
    ws.wait_state("stuck", "running")
    ws.stop()
    (ws.inbox / "again" / "exit_code").unlink()
    proc = ws.cli("retry", "again")
    assert proc.returncode == 0, proc.stderr
    assert "failure -> stable" in proc.stdout
    proc = ws.cli("cancel", "stuck")
    assert proc.returncode == 0, proc.stderr
    row = ws.case("stuck")
    assert (row.state, row.reason, row.slot_index) == ("failure", "cancelled", None)
    pid = int(row.task_id)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or
             Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
             what="the cancelled job to end")
    ws.start()
    ws.wait_state("again", "success")
    assert ws.case("again").run == 2


def test_requests_through_a_running_daemon(ws):
    ws.start()
    ws.drop_case("stop-me", hold="never")
    ws.wait_state("stop-me", "running")
    proc = ws.cli("cancel", "stop-me")
    assert proc.returncode == 0, proc.stderr
    assert "requested" in proc.stdout and "running -> failure" in proc.stdout
    proc = ws.cli("retry", "stop-me", "--no-wait")
    assert proc.returncode == 0
    ws.wait_state("stop-me", "running")
    proc = ws.cli("retry", "stop-me")
    assert proc.returncode == 1 and "retry applies to: failure, not_found" in proc.stderr


def test_odd_case_names_flow_safely(ws, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    ws.start()
    for name in ODD_NAMES:
        ws.drop_case(name)
    for name in ODD_NAMES:
        row = ws.wait_state(name, "success")
        env = (Path(row.remote_path) / "job_env.txt").read_text()
        assert f"CASEFLOW_CASE_NAME={name}" in env
    assert list(tmp_path.rglob("CANARY")) == []
    assert not Path("CANARY").exists()
    out = json.loads(ws.cli("status", "--json", check=True).stdout)
    assert sorted(c["name"] for c in out) == sorted(ODD_NAMES)
    # like every command line tool: `--` ends the options
    show = ws.cli("show", "-c", str(ws.config_path), "--", "-leading-dash", check=True)
    assert "-leading-dash" in show.stdout
    assert "tab\\there" in ws.cli("status", check=True).stdout  # escaped, one line per case


def test_diagram_formats(ws, tmp_path):
    out = ws.cli("diagram", check=True).stdout
    assert out.startswith("---") and "stateDiagram-v2" in out
    target = tmp_path / "m.svg"
    ws.cli("diagram", "--format", "svg", "-o", str(target), check=True)
    assert b"<svg" in target.read_bytes()
    assert "digraph" in ws.cli("diagram", "--format", "dot", check=True).stdout
