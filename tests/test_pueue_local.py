"""The pueue backend through the `local` transport: a real pueued (3.4.1 and 4.0.4), its client
first on this process's PATH as `pueue`."""

import os

import pytest

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
