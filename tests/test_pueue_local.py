"""The pueue backend through the `local` transport: the emulator first on this process's PATH."""

import json
import os

import pytest

from pueue_emulator import install, run as emulator, stop_tasks


@pytest.fixture
def local_pueue(ws, monkeypatch):
    state = install(ws.root / "bin", version="4.0.4")
    monkeypatch.setenv("PATH", f"{ws.root / 'bin'}{os.pathsep}{os.environ['PATH']}")
    ws.write_config(backend={**ws.settings["backend"], "kind": "pueue"})
    yield state
    stop_tasks(state)


def test_a_case_runs_in_pueue_on_this_machine_and_can_be_cancelled(ws, local_pueue):
    ws.start()
    ws.drop_case("here")
    ws.drop_case("stopme", hold="never")
    row = ws.wait_state("here", "success")
    tasks = json.loads(emulator(local_pueue, "status", "--json").stdout)["tasks"]
    assert tasks[row.task_id]["label"].endswith(f"-{row.id}-1")
    assert tasks[row.task_id]["group"] == "gpu_a"
    stuck = ws.wait_state("stopme", "running")
    proc = ws.cli("cancel", "stopme", env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    row = ws.wait_state("stopme", "failure")
    assert row.reason == "cancelled"
    tasks = json.loads(emulator(local_pueue, "status", "--json").stdout)["tasks"]
    assert tasks[stuck.task_id]["status"]["Done"]["result"] == "Killed"
