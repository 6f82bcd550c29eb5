"""The pueue backend through the `local` transport: a real pueued (3.4.1 and 4.0.4), its client
first on this process's PATH as `pueue`."""

import os
from pathlib import Path

import pytest

from caseflow.core.case_model import job_log_path
from harness import wait_for
from pueue_daemon import VERSIONS, PueueDaemon, result_of, status_name


@pytest.fixture(params=VERSIONS)
def local_pueue(ws, monkeypatch, request):
    daemon = PueueDaemon(ws.root / "pueue", request.param).start()
    monkeypatch.setenv("PATH", f"{daemon.bin}{os.pathsep}{os.environ['PATH']}")
    ws.write_config(backend={**ws.settings["backend"], "kind": "pueue"})
    yield daemon
    daemon.close()


def test_a_case_runs_in_pueue_on_this_machine_and_can_be_cancelled(ws, local_pueue):
    ws.start()
    ws.drop_case("here")
    ws.drop_case("stopme", hold="never")
    row = ws.wait_state("here", "success")
    tasks = local_pueue.tasks()
    assert tasks[row.task_id]["label"].endswith(f"-{row.id}-1")
    assert tasks[row.task_id]["group"] == "gpu_a"
    stuck = ws.wait_state("stopme", "running")
    wait_for(lambda: status_name(local_pueue.tasks()[stuck.task_id]) == "Running",
             what="pueue to start the task")  # else cancel removes it from the queue
    proc = ws.cli("cancel", "stopme", env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    row = ws.wait_state("stopme", "failure")
    assert row.reason == "cancelled"
    # pueue kills asynchronously: the task is marked once its process has gone
    wait_for(lambda: status_name(local_pueue.tasks()[stuck.task_id]) == "Done",
             what="pueue to mark the killed task done")
    assert result_of(local_pueue.tasks()[stuck.task_id]) == "Killed"


def test_a_job_log_that_is_not_utf8_comes_home_with_the_results(ws, local_pueue):
    """pueue cannot give such a log (`pueue log --json` prints an error in its place, exit 0):
    results/<case>/caseflow-job.log is the job's own output from .caseflow/job.log, never
    pueue's error text, byte for byte."""
    written = b"before\xffafter\nerr\xfe\ncaf\xc3\xa9\n"
    ws.write_config(backend={**ws.settings["backend"], "command":
                             r"printf 'before\377after\n'; printf 'err\376\n' >&2; "
                             r"printf 'caf\303\251\n'"})
    ws.start()
    ws.drop_case("bytes")
    row = ws.wait_state("bytes", "success")
    got = (Path(row.results_path) / "caseflow-job.log").read_bytes()
    kept = job_log_path(ws.config().database, row).read_bytes()
    assert b"(Pueue error)" not in got and b"(Pueue error)" not in kept, got
    assert kept == got == written
