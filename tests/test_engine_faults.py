"""The engine under partial faults (issue 13): failed and odd polls, a job that must be
stopped before its case fails, broken pooled work, odd folder names, folders copied in
again, a stepped wall clock, a signal at a bad moment.

Driven tick by tick with a clock the test moves, over the real local transport, the real
direct runner (its jobs are real processes) and a real SQLite store; where a host must
misbehave, the real direct backend is subclassed to fail or to answer UNREADABLE for one
job on demand.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

from caseflow.backends import UNREADABLE, JobStatus
from caseflow.backends.direct import DirectBackend
from caseflow.core.engine import Engine
from caseflow.errors import PermanentError, TransientError
from caseflow.transports.local import LocalTransport
from harness import process_alive, wait_for
from test_engine import Clock, run_until, state_of


class Misbehaving(DirectBackend):
    """The real direct runner, whose polls or cancels can be made to fail, and whose poll
    can answer UNREADABLE for chosen cases (every other entry is the real answer)."""

    def __init__(self, transport):
        super().__init__(transport)
        self.fail_status: Exception | None = None
        self.fail_cancel: Exception | None = None
        self.unreadable: dict[int, str] = {}
        self.polls = 0
        self.cancels = 0

    def status(self, jobs):
        self.polls += 1
        if self.fail_status is not None:
            raise self.fail_status
        answers = super().status(jobs)
        for case_id, detail in self.unreadable.items():
            if case_id in answers:
                answers[case_id] = JobStatus(UNREADABLE, detail)
        return answers

    def cancel(self, job, force=False):
        self.cancels += 1
        if self.fail_cancel is not None:
            raise self.fail_cancel
        return super().cancel(job, force)


@pytest.fixture
def engines(ws):
    made = []

    def make(transport=None, **settings):
        if settings:
            ws.write_config(**settings)
        clock = Clock()
        transport = transport or LocalTransport("local", str(ws.remote))
        backend = Misbehaving(transport)
        engine = Engine(ws.config(), transport=transport, backend=backend, clock=clock)
        engine.start(workers=False)
        made.append(engine)
        return engine, clock, backend

    yield make
    for e in made:
        e.shutdown()
        e.store.close()


def running(ws, engine, clock, *names):
    run_until(engine, clock, lambda: all(state_of(ws, n) == "running" for n in names),
              step=0.5, what=f"{names} to run")
    return {n: ws.job_pid(n) for n in names}


def ticks(engine, clock, n, step):
    for _ in range(n):
        clock.advance(step)
        engine.tick()


# -- the failure streak (item 3) --------------------------------------------------------------
def test_a_good_poll_ends_the_failure_streak(ws, engines):
    """Two failed polls 25 hours apart, with good ones between, do not end a healthy case
    (they did: "gave up after 2 attempts over 90000 s")."""
    engine, clock, backend = engines(retry={"initial_seconds": 60, "max_seconds": 600,
                                            "give_up_after_seconds": 86400})
    ws.drop_case("long", hold="long")
    running(ws, engine, clock, "long")
    backend.fail_status = TransientError("squeue: Socket timed out on send/recv operation")
    ticks(engine, clock, 1, 60)
    row = ws.case("long")
    assert (row.state, row.attempts) == ("running", 1) and row.failing_since is not None
    backend.fail_status = None
    ticks(engine, clock, 25, 3600)  # a good poll every hour, for 25 hours
    row = ws.case("long")
    assert (row.attempts, row.failing_since, row.last_error) == (0, None, None)
    backend.fail_status = TransientError("squeue: Socket timed out on send/recv operation")
    ticks(engine, clock, 1, 3600)
    row = ws.case("long")
    assert (row.state, row.attempts, row.reason) == ("running", 1, None)
    backend.fail_status = None
    ws.release("long")
    run_until(engine, clock, lambda: state_of(ws, "long") == "success", step=600)


# -- a case failed while its job runs (items 3 and 4) -------------------------------------------
def test_an_unbroken_run_of_failed_polls_stops_the_job_before_the_case_fails(ws, engines):
    engine, clock, backend = engines(retry={"initial_seconds": 60, "max_seconds": 600,
                                            "give_up_after_seconds": 3600})
    ws.drop_case("doomed", hold="never")
    pid = running(ws, engine, clock, "doomed")["doomed"]
    backend.fail_status = TransientError("the queue does not answer")
    run_until(engine, clock, lambda: state_of(ws, "doomed") == "failure", step=300)
    row = ws.case("doomed")
    assert row.reason.startswith("gave up after") and "the queue does not answer" in row.reason
    # asked to stop (once); its end cannot be seen while the queue does not answer, so the
    # case keeps its slot (issue 25: a slot is free only once its job is seen gone)
    assert backend.cancels >= 1 and row.slot_index is not None
    assert "could not be stopped or seen to end" in ws.store.history(row.id)[-1].detail
    wait_for(lambda: not process_alive(pid), what="the job to end")
    backend.fail_status = None
    run_until(engine, clock, lambda: ws.case("doomed").slot_index is None, step=5)


def test_a_job_that_cannot_be_stopped_keeps_its_slot_and_the_case_says_so(ws, engines):
    engine, clock, backend = engines(retry={"initial_seconds": 1, "max_seconds": 5})
    ws.drop_case("stuck", group="gpu_b", hold="never")  # gpu_b has one slot
    pid = running(ws, engine, clock, "stuck")["stuck"]
    backend.fail_status = PermanentError("the queue's answer is not JSON: 'Segmentation fault'")
    backend.fail_cancel = TransientError("connection reset by peer")
    ws.drop_case("waiting", group="gpu_b")
    ticks(engine, clock, 20, 1)
    row = ws.case("stuck")
    assert row.state == "failure" and "not JSON" in row.reason  # it ends, saying why
    assert row.slot_index == 0 and row.wrapup  # but its slot stays with the live job
    assert "could not be stopped" in ws.store.history(row.id)[-1].detail
    assert "stopping its job" in row.last_error and backend.cancels >= 3
    assert process_alive(pid) and state_of(ws, "waiting") == "queued"
    status = ws.cli("status", check=True).stdout
    assert "keeps its slot" in status and "not JSON" in status
    assert "stuck" in ws.cli("resources", check=True).stdout
    # a restart keeps the slot with it (it is not a leaked slot)
    engine.shutdown()
    again, clock2, backend2 = engines()
    assert ws.case("stuck").slot_index == 0
    backend2.fail_status = PermanentError("the queue's answer is not JSON")
    backend2.fail_cancel = TransientError("connection reset by peer")
    ticks(again, clock2, 3, 10)
    assert ws.case("stuck").slot_index == 0 and process_alive(pid)
    backend2.fail_cancel = None  # the host lets us stop it now
    wait_for(lambda: (ticks(again, clock2, 1, 5), not process_alive(pid))[1],
             what="the job to end")
    assert ws.case("stuck").slot_index == 0  # its end not seen yet: the queue cannot tell
    backend2.fail_status = None
    run_until(again, clock2, lambda: ws.case("stuck").slot_index is None, step=5)
    assert ws.case("stuck").state == "failure" and not ws.case("stuck").wrapup
    run_until(again, clock2, lambda: state_of(ws, "waiting") == "success", step=1)


def test_a_kept_slot_is_freed_once_the_job_is_seen_to_end(ws, engines):
    engine, clock, backend = engines(retry={"initial_seconds": 1, "max_seconds": 5})
    ws.drop_case("ends", hold="ends")
    running(ws, engine, clock, "ends")
    backend.fail_status = PermanentError("the queue's answer is not JSON")
    backend.fail_cancel = TransientError("cancel refused")
    ticks(engine, clock, 3, 1)
    row = ws.case("ends")
    assert row.state == "failure" and row.slot_index is not None
    backend.fail_status = None  # the queue answers again; cancelling still fails
    ws.release("ends")  # the job ends by itself
    run_until(engine, clock, lambda: ws.case("ends").slot_index is None, step=1)
    row = ws.case("ends")
    assert "not JSON" in row.reason and not row.wrapup


def test_an_internal_error_in_a_poll_backs_off_and_ends_the_case_only_after_the_window(
        ws, engines, caplog):
    engine, clock, backend = engines(retry={"initial_seconds": 60, "max_seconds": 600,
                                            "give_up_after_seconds": 3600})
    ws.drop_case("buggy", hold="never")
    pid = running(ws, engine, clock, "buggy")["buggy"]
    backend.fail_status = KeyError("job_state")  # a parser's bug
    polls = backend.polls
    ticks(engine, clock, 600, 1)  # ten minutes of ticks
    row = ws.case("buggy")
    assert row.state == "running" and "internal error" in row.last_error
    assert backend.polls - polls == row.attempts <= 5  # 60 s, 120 s, 240 s, ... apart
    traced = [r for r in caplog.records if r.exc_info and "job_state" in str(r.exc_info[1])]
    assert len(traced) == row.attempts
    run_until(engine, clock, lambda: state_of(ws, "buggy") == "failure", step=300)
    assert "gave up after" in ws.case("buggy").reason
    wait_for(lambda: not process_alive(pid), what="the job to end")


# -- one unreadable entry in a batched poll (item 5) -------------------------------------------
def test_one_unreadable_entry_is_that_cases_problem_alone(ws, engines):
    engine, clock, backend = engines(groups={"gpu_a": {"slots": 3}},
                                     retry={"initial_seconds": 1, "max_seconds": 2,
                                            "give_up_after_seconds": 60})
    for name in ("good1", "odd", "good2"):
        ws.drop_case(name, hold=name)
    pids = running(ws, engine, clock, "good1", "odd", "good2")
    odd = ws.case("odd").id
    backend.unreadable = {odd: "task 7: unknown status 'Frozen'"}
    ticks(engine, clock, 10, 1)
    row = ws.case("odd")
    assert row.state == "running" and row.attempts >= 3 and "Frozen" in row.last_error
    for name in ("good1", "good2"):
        assert (ws.case(name).attempts, ws.case(name).last_error) == (0, None)
    ws.release("good1")
    ws.release("good2")
    run_until(engine, clock, lambda: state_of(ws, "good1") == state_of(ws, "good2") ==
              "success", step=1)
    run_until(engine, clock, lambda: state_of(ws, "odd") == "failure", step=5)
    assert "Frozen" in ws.case("odd").reason
    wait_for(lambda: not process_alive(pids["odd"]), what="the odd case's job to end")


# -- pooled work that breaks (item 7) ------------------------------------------------------------
class BrokenCleanup(LocalTransport):
    def __init__(self, root):
        super().__init__("local", root)
        self.removals = 0

    def remove_tree(self, remote_path):
        self.removals += 1
        raise RuntimeError("remove_tree is broken")


def test_a_broken_wrap_up_backs_off_and_is_logged_once_per_backoff(ws, engines, caplog):
    t = BrokenCleanup(str(ws.remote))
    engine, clock, _ = engines(transport=t, remote_cleanup="always",
                               retry={"initial_seconds": 5, "max_seconds": 300})
    ws.drop_case("wrapped")
    run_until(engine, clock, lambda: t.removals >= 1, step=0.5)
    before = t.removals
    ticks(engine, clock, 300, 0.1)  # 30 s of ticks (it spun: 9,017 ticks in 2 s)
    row = ws.case("wrapped")
    assert row.state == "success" and row.wrapup and "remove_tree is broken" in row.last_error
    assert t.removals - before <= 3  # after 5, 10 and 20 s
    traced = [r for r in caplog.records if r.exc_info and "remove_tree" in str(r.exc_info[1])]
    assert len(traced) == t.removals


# -- folder names (item 8) -------------------------------------------------------------------------
def test_a_folder_name_that_is_not_utf8_never_blocks_the_others(ws, engines):
    engine, clock, _ = engines()
    bad = os.path.join(os.fsencode(ws.inbox), b"caf\xe9")
    os.mkdir(bad)
    with open(os.path.join(bad, b"data"), "w") as f:
        f.write("x")
    ws.drop_case("alpha")
    ws.drop_case("zeta")  # sorted after the odd name
    run_until(engine, clock, lambda: state_of(ws, "alpha") == state_of(ws, "zeta") == "success",
              step=0.5)
    refused = [r for r in ws.cases() if r.name not in ("alpha", "zeta")]
    assert [r.state for r in refused] == ["failure"]
    assert "not valid UTF-8" in refused[0].reason and "rename" in refused[0].reason
    status = ws.cli("status", check=True).stdout
    assert "not valid UTF-8" in status and "caf\\xe9" in status
    ticks(engine, clock, 3, 10)  # rescans: refused once, not at every listing
    assert len(ws.cases()) == 3 and os.path.isdir(bad)
    # nor at every start: the store has the name as shown, matched to the folder's inode
    engine.shutdown()
    again, clock, _ = engines()
    ticks(again, clock, 3, 10)
    assert len(ws.cases()) == 3, [(r.id, r.name) for r in ws.cases()]


# -- folders copied in again (item 2) -----------------------------------------------------------
def test_a_folder_copied_into_the_inbox_again_is_a_new_case_whatever_its_inode(ws):
    ws.start()
    inodes = []
    for i in range(12):
        folder = ws.drop_case("again", files={"data": f"run {i}"})
        inodes.append(os.stat(folder).st_ino)
        wait_for(lambda: len(ws.cases("again")) == i + 1, what=f"copy {i + 1} to be a case")
        wait_for(lambda: ws.case("again").state == "success" and not ws.case("again").wrapup,
                 what=f"copy {i + 1} to succeed")
        if i < 11:
            shutil.rmtree(folder)
    reused = len(inodes) - len(set(inodes))
    print(f"\n{reused} of {len(inodes) - 1} copies had an inode used before")
    # a folder that stays is never admitted twice: not by more writes, not by a restart
    (ws.inbox / "again" / "more").write_text("more")
    ws.stop()
    ws.start()
    ticks_then = ws.ticks
    wait_for(lambda: ws.ticks >= ticks_then + 10, what="ten ticks")
    assert len(ws.cases("again")) == 12
    assert all(r.state == "success" for r in ws.cases("again"))


# -- a wall clock stepped back (the in-memory timers are monotonic) -------------------------
class SteppedClock:
    def __init__(self):
        self.offset = 0.0

    def __call__(self):
        return time.time() + self.offset


def test_a_wall_clock_stepped_back_does_not_stall_polling(ws):
    wall = SteppedClock()
    engine = Engine(ws.config(), clock=wall)
    engine.start(workers=False)

    def ticked(predicate):
        def go():
            engine.tick()
            return predicate()
        return go
    try:
        ws.drop_case("clocked", hold="clocked")
        wait_for(ticked(lambda: state_of(ws, "clocked") == "running"), what="the job to run")
        wall.offset = 3600  # the clock jumps an hour ahead, a poll happens, it is set back
        engine.tick()
        wall.offset = 0
        ws.release("clocked")
        wait_for(ticked(lambda: state_of(ws, "clocked") == "success"),
                 what="the job's end to be polled")
    finally:
        engine.shutdown()
        engine.store.close()


# -- SIGTERM at a bad moment (the handler is signal-safe) -----------------------------------
CHILD = r"""
import logging, os, signal, sys, threading, time
from caseflow.config import load_config
logging.basicConfig(level=logging.INFO)
from caseflow.daemon import Daemon
daemon = Daemon(load_config(sys.argv[1]))
daemon.install_signal_handlers()
# a signal can arrive while the main loop is inside the lock of an Event it waits on or
# sets: hold every Event's lock of the daemon and its engine while one arrives
held = [v._cond for o in (daemon, daemon.engine) for v in vars(o).values()
        if isinstance(v, threading.Event)]
for lock in held:
    lock.acquire()
os.kill(os.getpid(), signal.SIGTERM)
for _ in range(50):
    time.sleep(0.001)  # the handler runs in this thread, between these
for lock in held:
    lock.release()
sys.exit(daemon.run())
"""


def test_a_sigterm_while_the_main_loop_holds_a_lock_still_stops_the_daemon(ws):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ws.config_path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stopped" in proc.stderr
