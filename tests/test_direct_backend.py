"""The `direct` runner over the local transport: start, poll many in one call, cancel."""

import os
import signal
from pathlib import Path

import pytest

from caseflow.backends import FAILURE, NOT_FOUND, RUNNING, SUCCESS, JobRef, JobSpec
from caseflow.backends.direct import DirectBackend
from caseflow.transports.local import LocalTransport
from harness import wait_for

HOSTILE = ["with space", "quote'\"s", "$(touch CANARY)", "`touch CANARY`", "semi;touch CANARY",
           "new\nline", "-leading-dash", "ünïcödé ✓"]


class CountingTransport(LocalTransport):
    def __init__(self, *a):
        super().__init__(*a)
        self.calls = []

    def run(self, argv, timeout=60.0):
        self.calls.append(list(argv))
        return super().run(argv, timeout)


@pytest.fixture
def backend(tmp_path):
    t = CountingTransport("local", str(tmp_path / "remote"))
    return DirectBackend(t)


def _job(root: Path, name: str, command, case_id=1, env=None):
    folder = root / name
    folder.mkdir(parents=True)
    return JobSpec(case_id=case_id, label=f"caseflow-{case_id}-1", remote_path=str(folder),
                   group="gpu_a", command=command, env=env or {})


def _ref(job, task_id):
    return JobRef(job.case_id, task_id, job.label, job.remote_path)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def _wait_outcome(backend, ref, outcome):
    return wait_for(lambda: (s := backend.status([ref])[ref.case_id]).outcome == outcome and s,
                    what=f"job to be {outcome}")


def test_success_failure_and_output(backend, tmp_path):
    ok = _job(tmp_path, "ok", "echo hello; echo oops >&2", case_id=1)
    bad = _job(tmp_path, "bad", ["sh", "-c", "exit 7"], case_id=2)
    refs = [_ref(ok, backend.submit(ok)), _ref(bad, backend.submit(bad))]
    wait_for(lambda: all(s.outcome != RUNNING for s in backend.status(refs).values()))
    answers = backend.status(refs)
    assert answers[1] == answers[1].__class__(SUCCESS, "exit code 0", 0)
    assert (answers[2].outcome, answers[2].exit_code) == (FAILURE, 7)
    assert "code 7" in answers[2].detail
    log = (tmp_path / "ok" / ".caseflow" / "job.log").read_text()
    assert "hello" in log and "oops" in log


def test_status_of_many_jobs_is_one_command(backend, tmp_path):
    jobs = [_job(tmp_path, f"j{i}", "true", case_id=i) for i in range(25)]
    refs = [_ref(j, backend.submit(j)) for j in jobs]
    backend.transport.calls.clear()
    answers = backend.status(refs)
    assert len(backend.transport.calls) == 1
    assert set(answers) == set(range(25))


def test_submit_twice_starts_one_job(backend, tmp_path):
    marker = tmp_path / "runs"
    job = _job(tmp_path, "once", f"echo run >> {marker}; sleep 0.2")
    first = backend.submit(job)
    second = backend.submit(job)
    assert first == second
    _wait_outcome(backend, _ref(job, first), SUCCESS)
    assert marker.read_text().count("run") == 1


def test_running_then_cancelled(backend, tmp_path):
    job = _job(tmp_path, "long", "sleep 300; sleep 300")  # the job's own children too
    ref = _ref(job, backend.submit(job))
    assert backend.status([ref])[1].outcome == RUNNING
    wait_for(lambda: len(_group_members(int(ref.task_id))) >= 2, what="the job's processes")
    backend.cancel(ref)
    wait_for(lambda: _group_members(int(ref.task_id)) == [],
             what="every process of the job to end")
    status = wait_for(lambda: (s := backend.status([ref])[1]).outcome != RUNNING and s)
    assert status.outcome in (FAILURE, NOT_FOUND)
    assert not _alive(int(ref.task_id))
    backend.cancel(ref)  # cancelling an ended job is not an error


def test_a_job_killed_without_exit_code_is_not_found(backend, tmp_path):
    job = _job(tmp_path, "killed", "sleep 300")
    ref = _ref(job, backend.submit(job))
    os.killpg(int(ref.task_id), signal.SIGKILL)
    status = _wait_outcome(backend, ref, NOT_FOUND)
    assert "no exit code" in status.detail


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_reach_no_shell(backend, tmp_path, name):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    os.chdir(cwd)
    job = _job(tmp_path, name, 'printf "%s" "$CASEFLOW_CASE_NAME" > seen_name',
               env={"CASEFLOW_CASE_NAME": name})
    ref = _ref(job, backend.submit(job))
    _wait_outcome(backend, ref, SUCCESS)
    assert (Path(job.remote_path) / "seen_name").read_text() == name
    leftovers = [p for p in tmp_path.rglob("CANARY")] + [p for p in Path("/tmp").glob("CANARY")]
    assert leftovers == []


def test_missing_case_folder_is_permanent(backend, tmp_path):
    from caseflow.errors import PermanentError
    job = JobSpec(1, "l", str(tmp_path / "absent"), "g", "true")
    with pytest.raises(PermanentError, match="missing"):
        backend.submit(job)
