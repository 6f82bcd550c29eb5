"""`caseflow retry|cancel --state S [--host H] [--since T]`: every case the filters select and
the request applies to, listed, confirmed (or --yes), and reported one by one; with a daemon
running and without one."""

import os
import subprocess
import sys

import pexpect

from harness import DEADLINE, wait_for


def test_retry_of_every_failed_case_with_a_running_daemon(ws):
    ws.start()
    for name in ("f1", "f2"):
        ws.drop_case(name, exit_code=3)
    ws.drop_case("fine")
    for name in ("f1", "f2"):
        ws.wait_state(name, "failure")
    ws.wait_state("fine", "success")
    for name in ("f1", "f2"):  # fixed: the next run exits 0
        (ws.inbox / name / "exit_code").unlink()
    # no terminal to ask in: refused without --yes, nothing requested
    out = ws.cli("retry", "--state", "failure")
    assert out.returncode == 2 and "add --yes to retry these 2 cases" in out.stderr, out
    assert all(ws.case(n).request is None for n in ("f1", "f2"))
    out = ws.cli("retry", "--state", "failure", "--host", "local", "--since", "2000-01-01",
                 "--yes", check=True)
    assert "retry 2 cases:" in out.stdout and "f1 (failure" in out.stdout, out.stdout
    assert out.stdout.count("retry accepted (run 2)") == 2, out.stdout
    for name in ("f1", "f2"):
        ws.wait_state(name, "success")
    assert ws.case("fine").run == 1  # not selected
    out = ws.cli("retry", "--state", "failure", "--yes", check=True)
    assert "no case to retry" in out.stdout
    out = ws.cli("retry", "--state", "failure", "--since", "2999-01-01T00:00Z", "--yes")
    assert "no case to retry" in out.stdout


def test_cancel_of_a_hosts_cases_asks_first_and_works_without_a_daemon(ws):
    ws.write_config(backend={"kind": "direct", "command": "sleep 300"})
    ws.start()
    for name in ("r1", "r2"):
        ws.drop_case(name)
    for name in ("r1", "r2"):
        ws.wait_state(name, "running")
    ws.stop()  # no daemon: the command applies the requests itself
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    args = ["-m", "caseflow.cli", "cancel", "--host", "local", "-c", str(ws.config_path)]
    child = pexpect.spawn(sys.executable, args, env=env, encoding="utf-8", timeout=DEADLINE)
    child.expect(r"cancel 2 cases:")
    child.expect(r"go on\? \[y/N\] ")
    child.sendline("n")
    child.expect("nothing done")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert [ws.case(n).state for n in ("r1", "r2")] == ["running", "running"]
    out = subprocess.run([sys.executable, *args, "--yes"], capture_output=True, text=True,
                         timeout=DEADLINE + 120, env=env)
    assert out.returncode == 0, out
    assert out.stdout.count("cancelled: running -> ") == 2, out.stdout
    assert [ws.case(n).state for n in ("r1", "r2")] == ["failure", "failure"]


def test_bulk_mistakes_are_usage_errors(ws):
    ws.start()
    for args, words in (
        (("retry",), "select cases with --state or --host"),
        (("retry", "--state", "broken", "--yes"), "--state 'broken': not a state"),
        (("cancel", "--host", "elsewhere", "--yes"), "--host 'elsewhere': no such host"),
        (("retry", "--state", "failure", "--since", "yesterday"), "not a date or time"),
        (("retry", "x", "--state", "failure"), "not both"),
    ):
        out = ws.cli(*args)
        assert out.returncode == 2 and words in out.stderr, (args, out.stderr)


def test_since_out_of_range_or_empty_and_ctrl_d_at_the_prompt_change_nothing(ws):
    ws.start()
    ws.drop_case("f", exit_code=3)
    ws.wait_state("f", "failure")
    for since in ("0001-01-01", ""):  # (year 1 is out of range for a timestamp)
        out = ws.cli("retry", "--state", "failure", "--since", since, "--yes")
        assert out.returncode == 2 and "not a date or time" in out.stderr, (since, out)
        assert "Traceback" not in out.stderr
    out = ws.cli("retry", "--state", "failure", "--since", "2000-01-01t00:00z", "--no-wait",
                 "--yes")
    assert out.returncode == 0 and "retry 1 case:" in out.stdout, out  # RFC 3339's lower case
    wait_for(lambda: (r := ws.case("f")).run == 2 and r.state == "failure" and not r.request,
             what="the second run to fail")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    child = pexpect.spawn(sys.executable, ["-m", "caseflow.cli", "retry", "--state", "failure",
                                           "-c", str(ws.config_path)], env=env,
                          encoding="utf-8", timeout=DEADLINE)
    child.expect(r"go on\? \[y/N\] ")
    child.sendeof()
    child.expect("nothing done")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and "Traceback" not in child.before
