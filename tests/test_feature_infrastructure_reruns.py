"""Steps of features/infrastructure_reruns.feature: a job the infrastructure took away runs
again by itself; a job that failed, or that the operator cancelled, does not.

The GPU host is this machine (the `local` transport and the `direct` runner). A reboot, short
of rebooting: every job's processes are SIGKILLed (a killed job writes no exit code) and the
host's boot id changes, in a file of the test's own that the backend reads in place of the
kernel's (`backend.boot_id_file`)."""

import os
import signal
import uuid

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403  (shared steps become fixtures here)
from bdd_steps import shown, wait_terminal  # noqa: E402
from harness import RunningCommand, process_alive, wait_for  # noqa: E402
from webtools import WEB, request  # noqa: E402

scenarios("infrastructure_reruns.feature")


def boot_id_file(ws):
    return ws.root / "boot_id"


@given("caseflow is running on a GPU host whose boot id the test controls")
def caseflow_with_boot_id(ws):
    boot_id_file(ws).write_text(f"{uuid.uuid4()}\n")
    ws.write_config(backend={**ws.settings["backend"], "boot_id_file": str(boot_id_file(ws))},
                    web=WEB)
    ws.start()


def reboot(ws):
    """Every job under the remote root is SIGKILLed (its process group: the job and what it
    started), then the host comes back with another boot id."""
    killed = []
    for pid_file in ws.remote.glob("*/.caseflow/pid"):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if process_alive(pid):
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
    for pid in killed:
        wait_for(lambda pid=pid: not process_alive(pid), what=f"job {pid} to be gone")
    boot_id_file(ws).write_text(f"{uuid.uuid4()}\n")
    return killed


@when("the GPU host reboots: every job's processes are killed and its boot id changes")
def host_reboots(ws):
    assert reboot(ws), "no job was running to be killed"


@given(parsers.parse('the case folder "{name}" whose job writes a checkpoint for {n:d} s when '
                     'stopped was dropped into the inbox'))
def case_with_checkpoint(ws, name, n):
    ws.drop_case(name, hold=name, files={"data.bin": b"x" * 1000, "stop_seconds": str(n)})


@then(parsers.parse('the history of "{name}" says "{words}"'))
def history_says(ws, name, words):
    def found():
        details = [h["detail"] or "" for h in shown(ws, name)["history"]]
        return next((d for d in details if words in d), None)

    detail = wait_for(found, what=f"the history of {name!r} to say {words!r}")
    assert "rebooted" in detail, detail  # the cause, as the backend said it


@then(parsers.parse('the job of "{name}" is running again, as run {run:d}'))
def running_again(ws, name, run):
    row = ws.wait_state(name, "running")
    wait_for(lambda: ws.case(name).run == run and ws.case(name).state == "running"
             and ws.case(name).task_id, what=f"run {run} of {name!r} to be submitted")
    assert ws.case(name).run == run
    assert process_alive(ws.job_pid(name)), f"run {run}'s job of {name!r} is not running"
    assert row is not None


@when(parsers.parse('the GPU host reboots under the job of "{name}" {times:d} times'))
def reboots_under(ws, name, times):
    for n in range(1, times + 1):
        def running(n=n):
            row = ws.case(name)
            return row is not None and row.run == n and row.state == "running" and row.task_id

        wait_for(running, what=f"run {n} of {name!r} to run")
        pid = ws.job_pid(name)
        wait_for(lambda pid=pid: process_alive(pid), what=f"run {n}'s job of {name!r}")
        assert reboot(ws), f"run {n}'s job of {name!r} was not running"


@when(parsers.parse('the operator cancels "{name}" and the GPU host reboots while its job '
                    'writes its checkpoint'))
def cancel_then_reboot(ws, name):
    started = ws.ctl / f"{name}.started"
    wait_for(started.exists, what=f"the job of {name!r} to start")
    cancel = RunningCommand(ws.config_path, "cancel", name)
    # the job got its SIGTERM (caseflow noted it sent it) and is writing its checkpoint
    wait_for(lambda: ws.case(name).stop_sent >= 1, what=f"the stop of {name!r} to begin")
    assert ws.case(name).state == "running"
    assert reboot(ws), f"the job of {name!r} was not running"
    assert cancel.end() == 0, cancel.err
    assert "running -> failure (cancelled)" in cancel.out, cancel.out


@then(parsers.parse('the reason given for "{name}" says "{words}"'))
def reason_says(ws, name, words):
    reason = wait_terminal(ws, name).reason or ""
    assert words in reason, reason
    assert "rebooted" in reason, reason


@then(parsers.parse('the case "{name}" is on its {nth} run'))
def nth_run(ws, name, nth):
    assert shown(ws, name)["run"] == ["first", "second", "third"].index(nth) + 1


@then(parsers.parse('caseflow shows both runs of "{name}": the first ended by rerun, the '
                    'second in success'))
def both_runs(ws, name):
    runs = shown(ws, name)["runs"]
    assert [(r["run"], r["ended"], r["to"]) for r in runs] == [
        (1, "rerun", "stable"), (2, "complete", "success")]
    assert runs[0]["detail"].startswith("rerun 1 of 2: ")
    out = ws.cli("show", name, check=True).stdout
    assert "runs:" in out and "rerun: rerun 1 of 2: " in out, out
    # and the status page's case page: the run, how many reruns, each run's end
    html = request(ws.daemon.web.url, f"/cases/{shown(ws, name)['id']}")[2].decode()
    assert "2 (1 rerun: the infrastructure took its job away)" in html, html
    assert 'id="runs"' in html and "rerun 1 of 2: host local rebooted" in html, html
