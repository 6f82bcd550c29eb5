"""The pueue backend against the pueue emulator, over the real sshd, for pueue 3.x and 4.x."""

import json
import os
from pathlib import Path

import pytest

from caseflow.backends import FAILURE, NOT_FOUND, RUNNING, SUCCESS, JobRef, JobSpec
from caseflow.backends.pueue import BadOutput, PueueBackend, parse_status, task_outcome
from caseflow.config import GroupConfig, TransportConfig
from caseflow.errors import PermanentError
from caseflow.transports.ssh import SSHTransport
from harness import wait_for
from pueue_emulator import install, run as emulator, stop_tasks
from sshd import SSHServer, transport_settings

VERSIONS = ["3.4.1", "4.0.4"]
GROUPS = (GroupConfig("gpu_a", 2), GroupConfig("gpu_b", 1))
SHARED = Path(__file__).resolve().parent / "data" / "pueue"  # pueue's own state files


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    server = SSHServer(tmp_path_factory.mktemp("pueuehost")).start()
    yield server
    server.stop()


@pytest.fixture(params=VERSIONS)
def pueue(request, host, tmp_path):
    """A fresh pueue (emulator) of the given version on the host; the backend and transport."""
    state = install(host.bin, state_dir=tmp_path / "pueue-state", version=request.param)
    transport = SSHTransport(TransportConfig(**transport_settings(host, tmp_path)))
    backend = PueueBackend(transport, GROUPS)
    backend.state = state
    yield backend
    stop_tasks(state)
    transport.close()


def job(tmp_path, case_id, command="true", group="gpu_a", label=None, env=None):
    folder = tmp_path / f"case{case_id}"
    folder.mkdir(exist_ok=True)
    return JobSpec(case_id=case_id, label=label or f"caseflow-t-{case_id}-1",
                   remote_path=str(folder), group=group, command=command, env=env or {})


def ref(spec, task_id):
    return JobRef(spec.case_id, task_id, spec.label, spec.remote_path)


def outcome(backend, r, wanted):
    return wait_for(lambda: (s := backend.status([r])[r.case_id]).outcome == wanted and s,
                    what=f"the task to be {wanted}")


def test_version_is_detected_and_groups_are_made_to_match_the_slots(pueue):
    pueue.prepare()
    assert pueue.version == json.loads((pueue.state / "emulator.json").read_text())["version"]
    groups = json.loads(emulator(pueue.state, "group", "--json").stdout)
    assert groups["gpu_a"]["parallel_tasks"] == 2 and groups["gpu_b"]["parallel_tasks"] == 1
    commands = pueue.transport.commands
    pueue.prepare()  # once per connection
    assert pueue.transport.commands == commands


def test_submit_run_succeed_with_label_env_and_log(pueue, tmp_path):
    spec = job(tmp_path, 1, 'echo "hi $CASEFLOW_CASE_NAME"; pwd',
               env={"CASEFLOW_CASE_NAME": "it's $(odd)"})
    task = pueue.submit(spec)
    assert task.isdigit()
    status = outcome(pueue, ref(spec, task), SUCCESS)
    assert status.exit_code == 0
    tasks = json.loads(emulator(pueue.state, "status", "--json").stdout)["tasks"]
    assert tasks[task]["label"] == spec.label and tasks[task]["group"] == "gpu_a"
    assert tasks[task]["path"] == spec.remote_path
    log = pueue.job_log(ref(spec, task))
    assert "hi it's $(odd)" in log and spec.remote_path in log


def test_a_failing_job_reports_its_exit_code(pueue, tmp_path):
    spec = job(tmp_path, 2, "exit 7")
    status = outcome(pueue, ref(spec, pueue.submit(spec)), FAILURE)
    assert (status.exit_code, status.detail) == (7, "job exited with code 7")


def test_submit_adopts_the_task_already_added_for_the_label(pueue, tmp_path):
    spec = job(tmp_path, 3, "sleep 30")
    first = pueue.submit(spec)
    second = pueue.submit(spec)  # as after a crash between `pueue add` and the commit
    assert first == second
    tasks = json.loads(emulator(pueue.state, "status", "--json").stdout)["tasks"]
    assert [t["label"] for t in tasks.values()].count(spec.label) == 1


def test_a_reused_id_with_another_label_is_not_found(pueue, tmp_path):
    spec = job(tmp_path, 4, "true")
    task = pueue.submit(spec)
    outcome(pueue, ref(spec, task), SUCCESS)
    assert emulator(pueue.state, "clean").returncode == 0
    other = job(tmp_path, 5, "sleep 30", label="someone-else")
    assert pueue.submit(other) == task  # pueue reuses the id
    status = pueue.status([ref(spec, task)])[4]
    assert status.outcome == NOT_FOUND and "no longer knows" in status.detail


def test_polling_many_tasks_is_one_command(pueue, tmp_path):
    specs = [job(tmp_path, i, "sleep 30", group="gpu_a") for i in range(10, 16)]
    refs = [ref(s, pueue.submit(s)) for s in specs]
    before = (pueue.transport.commands, pueue.transport.connects)
    answers = pueue.status(refs)
    assert (pueue.transport.commands - before[0], pueue.transport.connects - before[1]) == (1, 0)
    assert all(a.outcome == RUNNING for a in answers.values())
    details = sorted(a.detail for a in answers.values())
    assert details.count("running") == 2 and details.count("queued") == 4  # 2 slots


def test_cancel_kills_a_running_task_and_removes_a_queued_one(pueue, tmp_path):
    running = job(tmp_path, 20, "sleep 60", group="gpu_b")
    queued = job(tmp_path, 21, "sleep 60", group="gpu_b")
    r1, r2 = ref(running, pueue.submit(running)), ref(queued, pueue.submit(queued))
    outcome(pueue, r1, RUNNING)
    assert pueue.status([r2])[21].detail == "queued"
    pueue.cancel(r2)
    assert pueue.status([r2])[21].outcome == NOT_FOUND  # removed from the queue
    pueue.cancel(r1)
    assert "killed" in outcome(pueue, r1, FAILURE).detail
    pueue.cancel(r1)  # already ended: nothing to do, no error


def test_an_unknown_group_is_refused_permanently_with_pueues_words(pueue, tmp_path):
    pueue.manage_groups = False
    with pytest.raises(PermanentError, match="pueue refused the job: Group nowhere doesn't exist"):
        pueue.submit(job(tmp_path, 30, group="nowhere"))


def test_a_paused_group_is_reported(pueue, tmp_path):
    spec = job(tmp_path, 40, "sleep 60", group="gpu_b")
    waiting = job(tmp_path, 41, "true", group="gpu_b")
    r1, r2 = ref(spec, pueue.submit(spec)), ref(waiting, pueue.submit(waiting))
    outcome(pueue, r1, RUNNING)
    assert emulator(pueue.state, "_emulator", "restart").returncode == 0
    answers = pueue.status([r1, r2])
    assert answers[40].outcome == FAILURE and "killed" in answers[40].detail
    assert answers[41].outcome == RUNNING and "gpu_b is PAUSED" in answers[41].detail
    assert "gpu_b" in pueue.notice() and "PAUSED" in pueue.notice()


def test_a_wiped_pueue_state_makes_tasks_not_found(pueue, tmp_path):
    spec = job(tmp_path, 50, "sleep 60")
    r = ref(spec, pueue.submit(spec))
    emulator(pueue.state, "_emulator", "wipe")
    assert pueue.status([r])[50].outcome == NOT_FOUND


# -- parsing, on canned and real pueue output --------------------------------------------------
@pytest.mark.parametrize("status, expected", [
    ("Queued", (RUNNING, None)), ("Running", (RUNNING, None)), ("Locked", (RUNNING, None)),
    ({"Stashed": {"enqueue_at": None}}, (RUNNING, None)),
    ({"Done": "Success"}, (SUCCESS, 0)), ({"Done": {"Failed": 3}}, (FAILURE, 3)),
    ({"Done": "Killed"}, (FAILURE, None)), ({"Done": {"FailedToSpawn": "no dir"}}, (FAILURE, None)),
    ({"Done": "Errored"}, (FAILURE, None)), ({"Done": "DependencyFailed"}, (FAILURE, None)),
    ({"Queued": {"enqueued_at": "2026-01-01T00:00:00.123456789Z"}}, (RUNNING, None)),
    ({"Running": {"enqueued_at": "x", "start": "y"}}, (RUNNING, None)),
    ({"Paused": {"enqueued_at": "x", "start": "y"}}, (RUNNING, None)),
    ({"Locked": {"previous_status": "Queued"}}, (RUNNING, None)),
    ({"Done": {"enqueued_at": "x", "start": "y", "end": "z", "result": "Success"}}, (SUCCESS, 0)),
    ({"Done": {"enqueued_at": "x", "start": "y", "end": "z", "result": {"Failed": 2}}},
     (FAILURE, 2)),
])
def test_task_status_mapping_3x_and_4x(status, expected):
    got = task_outcome({"status": status})
    assert (got.outcome, got.exit_code) == expected


@pytest.mark.parametrize("text", ["", "garbage", '{"tasks": ', '{"groups": {}}', "[1, 2]",
                                  '{"tasks": {"0": {"status": {"Exploded": 1}}}}'])
def test_unreadable_output_is_bad_output(text):
    with pytest.raises(BadOutput):
        data = parse_status(text)
        for task in data["tasks"].values():
            task_outcome(task)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("state_file", ["v4.0.0_state.json", "v2.0.0_state.json"])
def test_real_pueue_state_files_parse(tmp_path, version, state_file):
    state = tmp_path / "state"
    install(tmp_path / "bin", state_dir=state, version=version)
    assert emulator(state, "_emulator", "load", str(SHARED / state_file)).returncode == 0
    data = parse_status(emulator(state, "status", "--json").stdout)
    outcomes = [task_outcome(t).outcome for t in data["tasks"].values()]
    assert outcomes and set(outcomes) <= {RUNNING, SUCCESS, FAILURE}


def test_priority_is_passed_to_pueue(pueue, tmp_path):
    folder = tmp_path / "prio"
    folder.mkdir()
    spec = JobSpec(case_id=60, label="caseflow-t-60-1", remote_path=str(folder), group="gpu_a",
                   command="true", priority=5)
    task = pueue.submit(spec)
    tasks = json.loads(emulator(pueue.state, "status", "--json").stdout)["tasks"]
    assert tasks[task]["priority"] == 5
