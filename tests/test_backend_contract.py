"""One suite, every queue backend: the contract of the port in caseflow/backends/__init__.py.

It runs over the direct runner (over the local transport and over the real sshd), pueue (a
real pueued 3.4.1 and 4.0.4 per test, over the real sshd), Slurm (the session's real
one-node cluster, over its sshd) and Grid Engine (the session's real one-host cell, over its
sshd). What the queue says is read with the queue's own tools, not
through the backend under test; faults are produced for real (tests/backend_adapters.py).

A backend adapter is done when it passes this suite. To add one:
1. write an `Adapter` subclass in tests/backend_adapters.py: how the backend is reached
   (`open`, `make_backend`), what its queue itself says about a job (`on_queue`, `running`,
   `waiting`, `ended`), and how the queue forgets a job, where the job records that it
   started and how it ended, and the ways one entry of the poll's real answer is changed into
   a form the parser does not know (`forget`, `record`, `corrupt_record`, `start_record`,
   `entry_edits`, `edit_entry`); `has_queue = False` for a runner without a queue (the case
   of a job waiting in the queue does not apply to it);
2. add it to `ADAPTERS` there, once per variant (transport, version): every test below then
   runs over it;
3. run `pytest tests/test_backend_contract.py -k NAME`. A case the backend does not pass yet may
   be named in the adapter's `known_gaps` with the reason and where it is to be fixed: it is
   then an expected failure, and an error as soon as the backend passes it. An adapter with
   known gaps is not done.

The cases: submit; submit again adopts the case's job (one job on the queue); one poll for
many jobs is one remote command; a job that fails reports its exit code; after the queue
forgot a job its record on the host decides, without one the job has vanished (not_found),
and a record that cannot be read is unreadable; one entry that cannot be read is that job's
problem alone; a running job whose start record is spoiled is not taken for gone; when the job
started and ended, and that a job waiting in the queue says so; cancel of a running and of a
queued job; the log of a finished, a failed and a cancelled job; the log file written as the
job prints, read from where the last read ended (`caseflow logs -f`).
"""

import time
from pathlib import Path

import pytest

from backend_adapters import ADAPTERS, HOLD
from caseflow.backends import FAILURE, NOT_FOUND, RUNNING, SUCCESS, UNREADABLE
from caseflow.job_output import LogReader, Shown, log_path
from harness import DEADLINE, wait_for

# what a case name may carry: quotes, $(...), backticks, ;, commas, =, a newline, %, \
HOSTILE = "it's $(touch CANARY) `touch CANARY`; a,b,c=d\nsecond line %j \\ \"q\" -x"


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in ("slurm", "gridengine") else n
            for n in names]


def _open(request, tmp_path):
    cls, variant = ADAPTERS[request.param]
    adapter = cls.open(request, tmp_path / "remote", variant)
    yield adapter
    adapter.close()


@pytest.fixture(params=_params(ADAPTERS))
def adapter(request, tmp_path):
    yield from _open(request, tmp_path)


@pytest.fixture(params=_params(n for n, (cls, _) in ADAPTERS.items() if cls.has_queue))
def queue(request, tmp_path):
    """An adapter whose jobs can wait in a queue."""
    yield from _open(request, tmp_path)


def until(adapter, refs, check, what: str):
    """Poll like the engine does (all jobs in one call) until `check(answers)` holds."""
    def poll():
        answers = adapter.backend.status(refs)
        return answers if check(answers) else None
    return wait_for(poll, DEADLINE, interval=0.1, what=what)


def ended(adapter, ref):
    return until(adapter, [ref], lambda a: a[ref.case_id].outcome != RUNNING,
                 f"job {ref.task_id} to end")[ref.case_id]


def known_gap(adapter, case: str, passes: bool) -> None:
    """An expected failure where the adapter is known to fail `case` (Adapter.known_gaps);
    an error once it passes, so that the entry is removed."""
    gap = adapter.known_gaps.get(case)
    if gap and not passes:
        pytest.xfail(gap)
    assert not gap, f"{type(adapter).__name__} passes {case!r} now: remove it from known_gaps"


def started(spec):
    """Wait until a job (that touches `started` first) has started."""
    wait_for(lambda: (Path(spec.remote_path) / "started").exists(), DEADLINE,
             what=f"the job of case {spec.case_id} to start")


# -- submit ---------------------------------------------------------------------------------------
def test_a_job_runs_in_its_folder_with_its_environment_and_its_log_is_what_it_printed(
        adapter, tmp_path):
    spec = adapter.spec(1, 'printf %s "$CASEFLOW_CASE_NAME" > name.txt; pwd > pwd.txt; '
                           'echo "hello from the job"; echo "to stderr" >&2',
                        env={"CASEFLOW_CASE_NAME": HOSTILE})
    ref = adapter.submit(spec)
    assert ref.task_id
    status = ended(adapter, ref)
    assert (status.outcome, status.exit_code) == (SUCCESS, 0), status
    folder = Path(spec.remote_path)
    assert (folder / "name.txt").read_text() == HOSTILE
    assert (folder / "pwd.txt").read_text().strip() == str(folder)
    log = adapter.backend.job_log(ref)
    assert "hello from the job" in log and "to stderr" in log, log
    assert not list(tmp_path.rglob("CANARY"))


def test_submitting_again_adopts_the_cases_job_and_the_queue_holds_one(adapter):
    spec = adapter.spec(2, f"echo run >> runs; touch started; {HOLD}")
    first = adapter.submit(spec)
    assert adapter.backend.submit(spec) == first.task_id  # a retried step, the same label
    started(spec)
    assert adapter.on_queue(spec) == [first.task_id]
    adapter.release(spec)
    assert ended(adapter, first).outcome == SUCCESS
    assert adapter.backend.submit(spec) == first.task_id  # also once the job has ended
    assert (Path(spec.remote_path) / "runs").read_text() == "run\n"  # it ran once


# -- polling --------------------------------------------------------------------------------------
def test_one_poll_for_many_jobs_is_one_remote_command(adapter):
    specs = [adapter.spec(10, "true"), adapter.spec(11, "true"), adapter.spec(12, "exit 3"),
             adapter.spec(13, HOLD), adapter.spec(14, HOLD, group="gpu_one"),
             adapter.spec(15, HOLD, group="gpu_one")]  # 15 waits in a queue, if there is one
    refs = [adapter.submit(s) for s in specs]
    until(adapter, refs, lambda a: all(a[r.case_id].outcome != RUNNING for r in refs[:3]),
          "the short jobs to end")
    sent, ran = adapter.transport.counts()
    answers = adapter.backend.status(refs)
    after = adapter.transport.counts()
    assert after[0] - sent == 1 and (ran is None or after[1] - ran == 1), (sent, ran, after)
    assert [answers[r.case_id].outcome for r in refs] == [SUCCESS, SUCCESS, FAILURE] + \
        [RUNNING] * 3
    assert answers[12].exit_code == 3
    assert adapter.backend.status([]) == {} and adapter.transport.counts() == after
    for spec in specs:
        adapter.release(spec)
    until(adapter, refs, lambda a: all(a[r.case_id].outcome == SUCCESS for r in refs[3:]),
          "the held jobs to succeed")


def test_a_job_that_fails_reports_its_exit_code_and_its_log(adapter):
    spec = adapter.spec(4, 'echo "about to fail"; exit 7')
    ref = adapter.submit(spec)
    status = ended(adapter, ref)
    assert (status.outcome, status.exit_code) == (FAILURE, 7), status
    assert "7" in status.detail
    assert "about to fail" in adapter.backend.job_log(ref)


def test_after_the_queue_forgot_a_job_its_record_decides_and_without_one_it_vanished(adapter):
    kept, lost, odd = adapter.spec(20, "exit 5"), adapter.spec(21, "true"), \
        adapter.spec(22, "true")
    alive = adapter.spec(23, f"touch started; {HOLD}")
    refs = [adapter.submit(s) for s in (kept, lost, odd, alive)]
    until(adapter, refs, lambda a: all(a[r.case_id].outcome != RUNNING for r in refs[:3]),
          "three jobs to end")
    started(alive)
    adapter.forget(refs[:3])
    adapter.record(refs[1]).unlink()   # the host lost how it ended: the job has vanished
    adapter.corrupt_record(refs[2])    # names the job, but its exit code cannot be read
    answers = adapter.backend.status(refs)
    assert (answers[20].outcome, answers[20].exit_code) == (FAILURE, 5), answers[20]
    assert answers[21].outcome == NOT_FOUND, answers[21]
    assert answers[23].outcome == RUNNING, answers[23]
    known_gap(adapter, "unreadable record", answers[22].outcome == UNREADABLE)
    assert answers[22].outcome == UNREADABLE and answers[22].detail, answers[22]


def test_one_entry_that_cannot_be_read_is_that_jobs_problem_alone(adapter):
    specs = [adapter.spec(30, "true"), adapter.spec(31, "exit 4"),
             adapter.spec(32, f"touch started; {HOLD}"), adapter.spec(33, f"touch started; {HOLD}")]
    refs = [adapter.submit(s) for s in specs]
    until(adapter, refs, lambda a: all(a[r.case_id].outcome != RUNNING for r in refs[:2]),
          "two jobs to end")
    for spec, ref in zip(specs[2:], refs[2:]):
        started(spec)
        wait_for(lambda: adapter.running(ref), DEADLINE, what="the queue to say it runs")
    victim = refs[3]
    assert adapter.entry_edits
    for how in adapter.entry_edits:
        adapter.transport.edit_poll = lambda out: adapter.edit_entry(out, refs, victim, how)
        answers = adapter.backend.status(refs)
        assert answers[33].outcome == UNREADABLE and answers[33].detail, (how, answers[33])
        assert [answers[i].outcome for i in (30, 31, 32)] == [SUCCESS, FAILURE, RUNNING], \
            (how, answers)
        assert answers[31].exit_code == 4
    adapter.transport.edit_poll = None
    assert adapter.backend.status([victim])[33].outcome == RUNNING


def test_a_running_job_whose_start_record_is_spoiled_is_not_taken_for_gone(adapter):
    """What caseflow keeps on the host may be spoiled (a full disk, a person); a job that runs
    on must not be judged not_found, which ends its case and hands its GPU to another."""
    spec = adapter.spec(34, f"touch started; {HOLD}")
    ref = adapter.submit(spec)
    started(spec)
    wait_for(lambda: adapter.running(ref), DEADLINE, what="the queue to say it runs")
    adapter.start_record(ref).write_text("\0garbage\n")
    status = adapter.backend.status([ref])[34]
    assert adapter.running(ref)
    known_gap(adapter, "spoiled start record", status.outcome in (RUNNING, UNREADABLE))
    assert status.outcome in (RUNNING, UNREADABLE), status


# -- when the job ran -----------------------------------------------------------------------------
SLACK = 2.0  # Slurm and Grid Engine say whole seconds (caseflow.durations.TOLERANCE)


def test_the_jobs_start_and_end_lie_between_its_submit_and_the_poll_that_saw_it_end(adapter):
    """What the queue (or the direct runner's wrapper) says of when the job ran, as
    JobStatus.started and .ended: the job's durations in `status --json` are made of them."""
    spec = adapter.spec(60, f"touch started; {HOLD}; sleep 1")
    submitted = time.time()
    ref = adapter.submit(spec)
    started(spec)
    running = until(adapter, [ref], lambda a: a[60].outcome == RUNNING and not a[60].waiting,
                    "the job to be seen running")[60]
    on_disk = (Path(spec.remote_path) / "started").stat().st_mtime  # the job's first command
    if running.started is not None:  # a queue that says when it started the job
        assert submitted - SLACK <= running.started <= on_disk + SLACK, (submitted, running)
    assert running.ended is None
    released = time.time()
    adapter.release(spec)
    status = ended(adapter, ref)
    seen = time.time()
    assert status.outcome == SUCCESS, status
    assert status.started is not None and status.ended is not None, status
    assert submitted - SLACK <= status.started <= on_disk + SLACK, (submitted, status, on_disk)
    # it ran until it was released, and a second more; it ended before the poll saw it end
    assert released + 1 - SLACK <= status.ended <= seen + SLACK, (released, status, seen)
    assert status.ended - status.started >= released + 1 - on_disk - SLACK, status


def test_a_job_waiting_in_the_queue_says_so_and_has_not_started(queue):
    holder = queue.spec(61, f"touch started; {HOLD}", group="gpu_one")
    waiting = queue.spec(62, "true", group="gpu_one")
    h = queue.submit(holder)
    wait_for(lambda: queue.running(h), DEADLINE, what="the first job to run")
    w = queue.submit(waiting)
    wait_for(lambda: queue.waiting(w), DEADLINE, what="the second job to wait in the queue")
    answers = queue.backend.status([h, w])
    assert answers[62].outcome == RUNNING and answers[62].waiting, answers[62]
    assert answers[62].started is None and answers[62].ended is None, answers[62]
    assert answers[61].outcome == RUNNING and not answers[61].waiting, answers[61]
    queue.release(holder)
    assert ended(queue, w).outcome == SUCCESS


# -- cancel ---------------------------------------------------------------------------------------
def test_cancel_stops_a_running_job_its_log_stays_and_a_second_cancel_is_no_error(adapter):
    spec = adapter.spec(40, f'echo "started 40"; touch started; {HOLD}')
    ref = adapter.submit(spec)
    started(spec)
    wait_for(lambda: adapter.running(ref), DEADLINE, what="the queue to say it runs")
    adapter.backend.cancel(ref)
    status = ended(adapter, ref)
    assert status.outcome in (FAILURE, NOT_FOUND), status
    wait_for(lambda: adapter.ended(ref), DEADLINE, what="the queue to say it ended")
    adapter.backend.cancel(ref)  # it has ended: nothing to do, no error
    assert adapter.backend.status([ref])[40].outcome == status.outcome
    assert "started 40" in adapter.backend.job_log(ref)


def test_cancel_of_a_queued_job_takes_it_off_the_queue_and_leaves_the_others(queue):
    holder = queue.spec(50, f"touch started; {HOLD}", group="gpu_one")
    waiting = queue.spec(51, "touch ran", group="gpu_one")
    h = queue.submit(holder)
    wait_for(lambda: queue.running(h), DEADLINE, what="the first job to run")
    w = queue.submit(waiting)
    wait_for(lambda: queue.waiting(w), DEADLINE, what="the second job to wait in the queue")
    assert queue.backend.status([w])[51].outcome == RUNNING  # waiting counts as running
    queue.backend.cancel(w)
    status = ended(queue, w)
    assert status.outcome in (FAILURE, NOT_FOUND), status
    wait_for(lambda: queue.ended(w), DEADLINE, what="the queue to say it ended")
    queue.backend.cancel(w)  # again: no error
    assert queue.backend.status([h])[50].outcome == RUNNING and queue.running(h)
    queue.release(holder)
    assert ended(queue, h).outcome == SUCCESS
    assert queue.backend.status([w])[51].outcome == status.outcome
    assert not (Path(waiting.remote_path) / "ran").exists()  # it never ran


# -- the log, as the job writes it ----------------------------------------------------------------
def test_the_log_file_grows_as_the_job_prints_and_is_read_from_where_it_left_off(adapter):
    """`caseflow logs -f` and the status page read the backend's `log_file` on the host while
    the job runs (caseflow.job_output): the job's output must go into it as it is printed, not
    when the job ends, and each read takes up where the last one ended."""
    spec = adapter.spec(60, f'echo "first"; touch started; {HOLD}; echo "second" >&2')
    ref = adapter.submit(spec)
    path = log_path(adapter.backend, ref)
    assert path is not None and path.startswith(spec.remote_path + "/")
    reader, shown, text = LogReader(adapter.transport, path, 1 << 20), Shown(), []

    def read_until(line: str):
        def more():
            got = reader.read()
            text.append(shown.feed(got.data))
            return line in "".join(text)
        wait_for(more, DEADLINE, interval=0.1, what=f"{line!r} in the job's log")

    read_until("first\n")
    assert "second" not in "".join(text)  # read while the job runs (it waits for release)
    adapter.release(spec)
    read_until("second\n")
    assert ended(adapter, ref).outcome == SUCCESS
    assert "".join(text).count("first\n") == 1 and "first\nsecond\n" in "".join(text)
    assert reader.offset == len(Path(path).read_bytes())  # nothing left, nothing read twice
