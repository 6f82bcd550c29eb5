"""The `direct` runner over the local transport: start, poll many in one call, cancel."""

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from caseflow.backends import (FAILURE, LOST, NOT_FOUND, RUNNING, SUCCESS, UNREADABLE, JobRef,
                               JobSpec, JobStatus)
from caseflow.backends.direct import DirectBackend, parse_status
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


# -- one poll, every job judged on its own line (issue 13, item 5) ------------------------------
def _transport(request, root):
    """The transport of `request.param`: local, or over the real sshd, rooted at `root`."""
    if request.param == "local":
        return LocalTransport("local", str(root))
    from caseflow.config import TransportConfig
    from caseflow.transports.ssh import SSHTransport
    from sshd import transport_settings
    root.mkdir()
    return SSHTransport(TransportConfig(**transport_settings(request.getfixturevalue("sshd"),
                                                              root)))


@pytest.fixture(params=["local", "ssh"])
def any_backend(request, tmp_path):
    """The direct runner over the local transport and over the real sshd."""
    root = tmp_path / "remote"
    t = _transport(request, root)
    yield DirectBackend(t)
    t.close()


def test_an_exit_code_file_that_cannot_be_read_is_that_jobs_problem_alone(any_backend,
                                                                          tmp_path):
    backend = any_backend
    jobs = [_job(tmp_path, f"c{i}", command, case_id=i) for i, command in
            enumerate(["true", "sleep 300", "exit 4", "true"])]
    refs = [_ref(j, backend.submit(j)) for j in jobs]
    wait_for(lambda: [s.outcome for s in backend.status(refs).values()] ==
             [SUCCESS, RUNNING, FAILURE, SUCCESS], what="the jobs to end but one")
    # the last job's exit code file is not a number (a stray write: the job's own?): that
    # job's problem alone; the script says "bad" (a space or a CR in it must not make more
    # fields or lines of the poll)
    (Path(jobs[3].remote_path) / ".caseflow" / "exit_code").write_text("garbage\n")
    # ... and a job that still runs may write one too: it is running while it runs
    (Path(jobs[1].remote_path) / ".caseflow" / "exit_code").write_text("1 2\n")
    answers = backend.status(refs)
    assert [answers[i].outcome for i in range(4)] == [SUCCESS, RUNNING, FAILURE, UNREADABLE]
    assert answers[2].exit_code == 4
    assert "'3 exit bad" in answers[3].detail and jobs[3].remote_path in answers[3].detail
    backend.cancel(refs[1])


def test_what_the_status_script_says_is_read_per_job():
    refs = [JobRef(i, str(100 + i), f"l{i}", f"/cases/{i}") for i in range(7)]
    text = ("0 running\n1 exit 0\n2 exit 137\n3 gone\n"
            "4 exit 1 2\n5 running\n5 gone\nnoise\n99 running\n")  # 6 says nothing
    answers = parse_status(text, refs)
    assert [answers[i].outcome for i in range(7)] == [RUNNING, SUCCESS, FAILURE, NOT_FOUND,
                                                      UNREADABLE, UNREADABLE, UNREADABLE]
    assert answers[2].exit_code == 137
    assert "printed '4 exit 1 2'" in answers[4].detail
    assert "printed 2 lines" in answers[5].detail and "printed nothing" in answers[6].detail


def test_the_exit_line_carries_when_the_wrapper_saw_the_job_start_and_end():
    refs = [JobRef(i, str(100 + i), f"l{i}", f"/cases/{i}") for i in range(3)]
    answers = parse_status("0 exit 0 1796684032.123456789 1796684040.5\n"
                           "1 exit 2 - -\n"  # launched by an older caseflow: no notes
                           "2 exit 0 1796684032.%N 1796684040.%N\n", refs)  # a date without %N
    assert (answers[0].outcome, answers[0].started, answers[0].ended) == \
        (SUCCESS, 1796684032.123456789, 1796684040.5)
    assert (answers[1].exit_code, answers[1].started, answers[1].ended) == (2, None, None)
    assert (answers[2].started, answers[2].ended) == (1796684032, 1796684040)


def test_a_live_process_that_is_not_the_job_is_not_taken_for_it(backend, tmp_path):
    """The job's pid was reused by another process: the job is gone, not running. The pid is
    the task id; a task id that is no pid makes the script read the pid file."""
    job = _job(tmp_path, "reused", "true")
    ref = _ref(job, backend.submit(job))
    _wait_outcome(backend, ref, SUCCESS)
    (Path(job.remote_path) / ".caseflow" / "exit_code").unlink()
    other = subprocess.Popen(["sleep", "300"], cwd=tmp_path)  # works in another folder
    try:
        assert backend.status([_ref(job, str(other.pid))])[ref.case_id].outcome == NOT_FOUND
        (Path(job.remote_path) / ".caseflow" / "pid").write_text(f"{other.pid}\n")
        assert backend.status([_ref(job, "")])[ref.case_id].outcome == NOT_FOUND
        same = subprocess.Popen(["sleep", "300"], cwd=job.remote_path)  # one in the folder
        try:
            assert backend.status([_ref(job, str(same.pid))])[ref.case_id].outcome == RUNNING
            (Path(job.remote_path) / ".caseflow" / "pid").write_text(f"{same.pid}\n")
            assert backend.status([_ref(job, "")])[ref.case_id].outcome == RUNNING
        finally:
            same.kill()
            same.wait()
    finally:
        other.kill()
        other.wait()


def test_the_status_script_answers_alike_where_the_shell_has_no_test_ef(backend, tmp_path):
    """The script compares folders with `test -ef` where the shell has it, else with cd -P:
    both give the same answers (running, ended, gone, a reused pid)."""
    from caseflow.backends.direct import STATUS
    assert "if [ / -ef / ]; then" in STATUS
    without = STATUS.replace("if [ / -ef / ]; then", "if false; then")
    jobs = [_job(tmp_path, f"s{i}", command, case_id=i)
            for i, command in enumerate(["sleep 300", "exit 3", "sleep 300"])]
    refs = [_ref(j, backend.submit(j)) for j in jobs]
    wait_for(lambda: [s.outcome for s in backend.status(refs).values()] ==
             [RUNNING, FAILURE, RUNNING], what="two jobs running, one failed")
    other = subprocess.Popen(["sleep", "300"], cwd=tmp_path)
    try:
        backend.cancel(refs[2])
        wait_for(lambda: backend.status(refs)[2].outcome != RUNNING, what="the cancel")
        (Path(jobs[2].remote_path) / ".caseflow" / "exit_code").unlink(missing_ok=True)
        (Path(jobs[2].remote_path) / ".caseflow" / "pid").write_text(f"{other.pid}\n")
        triples = [backend.boot_id_file] + \
            [x for r in refs[:2] for x in (r.task_id, r.remote_path, r.label)] + \
            [str(other.pid), jobs[2].remote_path, refs[2].label]
        answers = [backend.transport.run(["sh", "-c", script, "caseflow-status", *triples])
                   for script in (STATUS, without)]
        assert answers[0].stdout == answers[1].stdout
        assert re.fullmatch(r"0 running\n1 exit 3 \d+\.\d+ \d+\.\d+\n2 gone\n",
                            answers[0].stdout), answers[0].stdout
        assert answers[0].stderr == answers[1].stderr == ""
    finally:
        other.kill()
        other.wait()
        backend.cancel(refs[0])


def test_more_jobs_than_one_command_carries_go_in_several(backend, tmp_path, monkeypatch):
    """sshd gives the whole command to the shell as one argument (at most 128 KiB on Linux):
    a poll of more jobs than fit is split, and every job still gets its answer."""
    from caseflow.backends import direct
    monkeypatch.setattr(direct, "COMMAND_BYTES", len(direct.STATUS) + 2000)
    jobs = [_job(tmp_path, f"many-{i:02d}-" + "x" * 40, "exit 3" if i % 2 else "true",
                 case_id=i) for i in range(60)]
    refs = [_ref(j, backend.submit(j)) for j in jobs]
    wait_for(lambda: all(s.outcome != RUNNING for s in backend.status(refs).values()),
             what="the jobs to end")
    backend.transport.calls.clear()
    answers = backend.status(refs)
    assert [answers[i].outcome for i in range(60)] == [SUCCESS, FAILURE] * 30
    assert 3 <= len(backend.transport.calls) <= 10
    assert all(len(" ".join(c)) < direct.COMMAND_BYTES for c in backend.transport.calls)


# -- a host rebooted under a job: its boot id changed (issue 28) -------------------------------
@pytest.fixture(params=["local", "ssh"])
def booted(request, tmp_path):
    """The direct runner over the local transport and over the real sshd, told to read the
    host's boot id from a file of the test's (at a path with a space and a quote): the test
    "reboots" the host by writing another id there."""
    root, boot = tmp_path / "remote", tmp_path / "it's boot" / "boot id"
    boot.parent.mkdir()
    boot.write_text("4a1e0c9e-0000-4000-8000-000000000001\n")
    t = _transport(request, root)
    backend = DirectBackend(t, boot_id_file=str(boot))
    backend.boot = boot
    yield backend
    t.close()


def _kill_job(ref):
    """SIGKILL the job's whole process group (its wrapper leads it), as a power cut does."""
    pgid = int(ref.task_id)
    os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not _group_members(pgid), what="the job's processes to be gone")


def test_a_job_gone_after_its_host_rebooted_is_lost(booted, tmp_path):
    """Processes gone, no exit code, and the boot id is not the one its launch noted: LOST,
    naming the host. Another job of the same poll that ended with exit 3 before is a FAILURE
    (its exit code is read first); one launched after the reboot runs."""
    failed = _job(tmp_path, "failed", "exit 3", case_id=1)
    lost = _job(tmp_path, "lost", "sleep 300", case_id=2)
    r_failed, r_lost = _ref(failed, booted.submit(failed)), _ref(lost, booted.submit(lost))
    _wait_outcome(booted, r_failed, FAILURE)
    assert Path(lost.remote_path, ".caseflow", "boot_id").read_text() == booted.boot.read_text()
    _kill_job(r_lost)
    booted.boot.write_text("4a1e0c9e-0000-4000-8000-000000000002\n")
    after = _job(tmp_path, "after", "sleep 300", case_id=3)
    r_after = _ref(after, booted.submit(after))
    answers = booted.status([r_failed, r_lost, r_after])
    assert (answers[1].outcome, answers[1].exit_code) == (FAILURE, 3)
    assert answers[2] == JobStatus(
        LOST, f"host {booted.transport.name} rebooted while the job ran (boot id changed)")
    assert answers[3].outcome == RUNNING
    booted.cancel(r_after)
    _wait_outcome(booted, r_after, FAILURE)


def test_a_job_killed_on_the_same_boot_is_not_found_as_before(booted, tmp_path):
    job = _job(tmp_path, "killed", "sleep 300")
    ref = _ref(job, booted.submit(job))
    _kill_job(ref)
    status = _wait_outcome(booted, ref, NOT_FOUND)
    assert "no exit code" in status.detail


def test_a_job_that_exited_3_stays_a_failure_after_a_reboot(booted, tmp_path):
    job = _job(tmp_path, "three", ["sh", "-c", "exit 3"])
    ref = _ref(job, booted.submit(job))
    _wait_outcome(booted, ref, FAILURE)
    booted.boot.write_text("another boot\n")
    status = booted.status([ref])[1]
    assert (status.outcome, status.exit_code) == (FAILURE, 3)


def test_without_a_boot_id_a_gone_job_is_not_found(booted, tmp_path):
    """A host whose boot id cannot be read (no such file), or a job launched without one noted
    (an older caseflow): a gone job is what it was before, never LOST on a guess."""
    unread = _job(tmp_path, "unread", "sleep 300", case_id=1)
    r_unread = _ref(unread, booted.submit(unread))
    older = _job(tmp_path, "older", "sleep 300", case_id=2)
    r_older = _ref(older, booted.submit(older))
    Path(older.remote_path, ".caseflow", "boot_id").unlink()
    _kill_job(r_unread)
    _kill_job(r_older)
    booted.boot.write_text("another boot\n")
    assert booted.status([r_older])[2].outcome == NOT_FOUND
    booted.boot.unlink()
    assert booted.status([r_unread])[1].outcome == NOT_FOUND
