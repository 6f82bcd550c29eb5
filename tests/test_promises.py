"""Regression tests of the three promises on the paths an operator takes every day (issue 25):
a GPU never runs two jobs at once; every case ends once with its results and each run's job
starts once; `retry` runs the case again on its inputs as they are now.

Each test failed on 27bf8ec (before the fixes). Real daemon, real folders, real detached jobs
(the `local` transport and the `direct` runner); the randomized model-based test
(tests/test_model_based.py) drives the same promises through random interleavings.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from caseflow.backends import RUNNING, JobRef, JobSpec
from caseflow.backends.direct import DirectBackend
from caseflow.core.engine import Engine
from caseflow.errors import TransientError
from caseflow.transports.local import LocalTransport
from harness import JOB, process_alive, wait_for

# A job that writes when it started and ended (on the "wall" of this machine, monotonic),
# takes 3 s to stop on TERM (a checkpoint), and runs until released.
SLOW_STOP_JOB = r"""
echo "start $(cut -d ' ' -f 1 /proc/uptime)" >> "{ctl}/$CASEFLOW_CASE_NAME.times"
trap 'sleep 3; echo "end $(cut -d " " -f 1 /proc/uptime)" >> "{ctl}/$CASEFLOW_CASE_NAME.times"; exit 143' TERM
while [ ! -e "{ctl}/release-$CASEFLOW_CASE_NAME" ]; do sleep 0.05; done
echo "end $(cut -d ' ' -f 1 /proc/uptime)" >> "{ctl}/$CASEFLOW_CASE_NAME.times"
"""


def times(ws, name: str) -> list[tuple[str, float]]:
    path = ws.ctl / f"{name}.times"
    if not path.exists():
        return []
    return [(w, float(t)) for w, t in (line.split() for line in path.read_text().splitlines())]


def only_gpu_b(ws, job: str) -> None:
    """One slot (gpu_b) for every case: the next case's job may start only when the slot
    is free."""
    ws.write_config(
        groups={"gpu_b": {"slots": 1}},
        backend={"kind": "direct", "command": job.replace("{ctl}", str(ws.ctl))},
    )


# -- 1. a retry is a new run ------------------------------------------------------------
def test_a_retry_runs_the_job_again_on_the_inputs_as_they_are_now(ws):
    """verify: size; the fix is one byte (same size): the retried job runs again, sees the
    new byte, and succeeds; the earlier run's results and log are kept beside the new ones."""
    ws.start()
    ws.drop_case("fixme", exit_code=3)
    ws.wait_state("fixme", "failure")
    first = ws.case("fixme")
    assert "exited with code 3" in first.reason
    (ws.inbox / "fixme" / "exit_code").write_text("0")  # the same size: 1 byte
    ws.cli("retry", "fixme", check=True)
    row = ws.wait_state("fixme", "success")
    assert row.run == 2
    assert row.remote_path != first.remote_path  # a folder of its own: nothing of run 1 reused
    results = Path(row.results_path)
    assert "CASEFLOW_RUN=2" in (results / "job_env.txt").read_text()
    kept = results.parent / f"{results.name}.run-1"
    assert "CASEFLOW_RUN=1" in (kept / "job_env.txt").read_text()
    assert (kept / "caseflow-job.log").exists() and (results / "caseflow-job.log").exists()
    assert (ws.var / "logs" / f"{row.id}-1.log").exists()
    assert (ws.var / "logs" / f"{row.id}-2.log").exists()


def test_a_case_whose_job_vanished_runs_again_at_its_retry(ws):
    """A job killed with no exit record (a host reboot) ends `not_found`; its retry runs the
    job again instead of finding the old launch and ending `not_found` at once."""
    ws.start()
    ws.drop_case("reboot", hold="reboot")
    ws.wait_state("reboot", "running")
    os.killpg(ws.job_pid("reboot"), signal.SIGKILL)
    ws.wait_state("reboot", "not_found")
    ws.cli("retry", "reboot", check=True)
    wait_for(lambda: ws.case("reboot").run == 2 and ws.case("reboot").state == "running",
             what="run 2 to start its job")
    ws.release("reboot")
    row = ws.wait_state("reboot", "success", "failure", "not_found")
    assert row.state == "success", row.reason


# -- 2. a folder replaced while its case waits ------------------------------------------
def test_a_folder_copied_in_again_while_its_case_waits_is_a_case_of_its_own(ws):
    only_gpu_b(ws, JOB)
    ws.start()
    ws.drop_case("blocker", hold="blocker")
    ws.wait_state("blocker", "running")
    ws.drop_case("data", files={"a.bin": b"old" * 100})
    ws.wait_state("data", "queued")
    old = ws.case("data")
    shutil.rmtree(ws.inbox / "data")
    (ws.inbox / "data").mkdir()  # a new copy begins...
    (ws.inbox / "data" / "a.bin").write_bytes(b"new" * 100)
    wait_for(lambda: len(ws.cases("data")) == 2, what="the new copy to become a case")
    ws.release("blocker")
    row = ws.wait_state_of(old.id, "failure")
    assert "replaced by a new copy" in row.reason
    (ws.inbox / "data" / "b.bin").write_bytes(b"second file")  # ...and goes on
    new = ws.wait_state("data", "success")
    assert new.id != old.id
    got = sorted(p.name for p in Path(new.remote_path).iterdir() if p.name != ".caseflow")
    assert {"a.bin", "b.bin"} <= set(got)
    assert Path(new.remote_path, "a.bin").read_bytes() == b"new" * 100
    assert ws.store.get(old.id).remote_path is None  # the old case never uploaded


# -- 3./4. a stop keeps the slot until the job is gone ----------------------------------
def test_cancel_keeps_the_slot_until_a_job_slow_to_stop_is_gone(ws):
    only_gpu_b(ws, SLOW_STOP_JOB)
    ws.write_config(stop_grace_seconds=30)
    ws.start()
    ws.drop_case("first")
    wait_for(lambda: times(ws, "first"), what="the first job to start")
    ws.drop_case("second")
    ws.wait_state("second", "queued")
    ws.cli("cancel", "first", "--no-wait", check=True)
    row = wait_for(lambda: (r := ws.case("first")).reason and r, what="the cancel to begin")
    assert row.state == "running" and row.slot_index is not None  # stopping, slot held
    ws.wait_state("first", "failure")
    assert ws.case("first").reason == "cancelled"
    wait_for(lambda: times(ws, "second"), what="the second job to start")
    ws.release("second")
    ws.wait_state("second", "success")
    first_end = max(t for w, t in times(ws, "first") if w == "end")
    second_start = min(t for w, t in times(ws, "second") if w == "start")
    assert second_start >= first_end, "the second job started on the GPU of a running one"


def test_a_job_that_ignores_term_is_killed_after_the_grace(ws):
    stubborn = 'trap "" TERM\nwhile :; do sleep 0.05; done\n'
    only_gpu_b(ws, stubborn)
    ws.write_config(stop_grace_seconds=1)
    ws.start()
    ws.drop_case("stubborn")
    ws.wait_state("stubborn", "running")
    pid = ws.job_pid("stubborn")
    ws.cli("cancel", "stubborn", check=True)
    ws.wait_state("stubborn", "failure")
    assert not process_alive(pid)
    assert ws.case("stubborn").slot_index is None


class LostReplies(LocalTransport):
    """Every command given to `run_once` (the submit) runs, and its answer is lost."""

    def run_once(self, argv, timeout=60.0):
        super().run_once(argv, timeout)
        raise TransientError("the connection dropped before the answer came")


@pytest.mark.parametrize("how", ["cancel", "give up"])
def test_a_job_whose_submit_answer_was_lost_is_found_and_stopped(ws, how):
    """The submit started the job but caseflow never heard its task id: a cancel (or giving
    up) finds the job by its launch record, stops it, and keeps the slot until it is gone."""
    only_gpu_b(ws, SLOW_STOP_JOB)
    if how == "give up":
        ws.write_config(retry={"initial_seconds": 0.2, "max_seconds": 0.5,
                               "give_up_after_seconds": 2})
    config = ws.config()
    engine = Engine(config, transport=LostReplies("local", str(config.hosts[0].transport.root)))
    from caseflow.daemon import Daemon
    ws.daemon = Daemon(config, engine=engine)
    import threading
    ws._count_ticks(engine)
    ws._thread = threading.Thread(target=ws.daemon.run, daemon=True)
    ws._thread.start()
    wait_for(ws.daemon.ready.is_set, what="the daemon to start")
    ws.drop_case("lost")
    wait_for(lambda: times(ws, "lost"), what="the job to start")
    assert ws.case("lost").state == "uploaded" and ws.case("lost").task_id is None
    if how == "cancel":
        ws.cli("cancel", "lost", "--no-wait", check=True)
    row = ws.wait_state("lost", "failure", timeout=90)
    assert row.task_id  # found by its launch record
    assert [w for w, _ in times(ws, "lost")] == ["start", "end"]  # stopped, once


# -- 5. a stop never reaches another case's job ----------------------------------------
def _spec(tmp_path, name, command, case_id):
    folder = tmp_path / "remote" / name
    folder.mkdir(parents=True)
    return JobSpec(case_id=case_id, label=f"caseflow-test-{case_id}-1", remote_path=str(folder),
                   group="g", command=command)


def test_a_stop_with_a_reused_pid_leaves_another_cases_job_alone(tmp_path):
    backend = DirectBackend(LocalTransport("local", str(tmp_path / "remote")))
    a, b = (_spec(tmp_path, n, "sleep 300", i) for i, n in ((1, "a"), (2, "b")))
    pid_a, pid_b = backend.submit(a), backend.submit(b)
    try:
        # case a's record names case b's job (its pid was reused by b's wrapper)
        backend.cancel(JobRef(a.case_id, pid_b, a.label, a.remote_path))
        ref_b = JobRef(b.case_id, pid_b, b.label, b.remote_path)
        assert backend.status([ref_b])[b.case_id].outcome == RUNNING
        assert process_alive(int(pid_b))
    finally:
        for pid in (pid_a, pid_b):
            os.killpg(int(pid), signal.SIGKILL)


COUNT_TERMS = (
    "exec python3 -c 'import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: open(\"terms\", \"a\").write(\"TERM\\n\"))\n"
    "open(\"ready\", \"w\").close()\n"
    "while True: time.sleep(0.01)\n'"
)


def test_a_stop_sends_term_to_each_process_of_the_job_once(tmp_path):
    """A job's TERM handler (writing a checkpoint) must run once: a second TERM can cut the
    checkpoint short. The stop signalled the job's group, then every process that carries
    the job's label, members of the group included: each got TERM twice (the randomized
    soak's `give up` case saw a job's handler run twice)."""
    backend = DirectBackend(LocalTransport("local", str(tmp_path / "remote")))
    job = _spec(tmp_path, "checkpoint", COUNT_TERMS, 1)
    folder = Path(job.remote_path)
    pid = backend.submit(job)
    ref = JobRef(job.case_id, pid, job.label, job.remote_path)
    try:
        wait_for(lambda: (folder / "ready").exists(), what="the job's handler to be set")
        backend.cancel(ref)
        wait_for(lambda: (folder / "terms").exists(), what="the job to get TERM")
        backend.cancel(ref)  # again, as after a lost reply: no second TERM either
        # the stop's signals were all sent when `cancel` returned; a second one came within
        # milliseconds of the first
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            time.sleep(0.1)
        assert (folder / "terms").read_text() == "TERM\n"
    finally:
        os.killpg(int(pid), signal.SIGKILL)


def test_a_job_whose_wrapper_died_runs_while_its_processes_do(tmp_path):
    """The wrapper killed alone (OOM killer): the job's own processes still run on the GPU,
    so the job is running until they are gone; then it is gone (no exit record)."""
    backend = DirectBackend(LocalTransport("local", str(tmp_path / "remote")))
    job = _spec(tmp_path, "orphan", f"while [ ! -e {tmp_path}/go ]; do sleep 0.05; done", 1)
    pid = backend.submit(job)
    ref = JobRef(job.case_id, pid, job.label, job.remote_path)
    try:
        wait_for(lambda: len(_group(int(pid))) >= 2, what="the job under its wrapper")
        os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: not process_alive(int(pid)), what="the wrapper to die")
        assert backend.status([ref])[1].outcome == RUNNING
        (tmp_path / "go").touch()
        wait_for(lambda: backend.status([ref])[1].outcome != RUNNING, what="the job to end")
    finally:
        (tmp_path / "go").touch()


def test_a_job_ends_with_the_processes_it_left_behind(tmp_path):
    """A job that exits leaving a child: the child is stopped before the job's end is
    recorded (the GPU is free once the job is seen ended)."""
    backend = DirectBackend(LocalTransport("local", str(tmp_path / "remote")))
    job = _spec(tmp_path, "leaver", f"sleep 300 & echo $! > {tmp_path}/child; exit 0", 1)
    pid = backend.submit(job)
    ref = JobRef(job.case_id, pid, job.label, job.remote_path)
    status = wait_for(lambda: (s := backend.status([ref])[1]).outcome != RUNNING and s,
                      what="the job to end")
    assert status.exit_code == 0
    child = int((tmp_path / "child").read_text())
    assert not process_alive(child)


def _group(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


# -- 7. the quiet period is on the monotonic clock ------------------------------------
class SteppedClock:
    """A wall clock that can jump (NTP, a VM resumed) and a monotonic one that cannot."""

    def __init__(self):
        self.wall, self.mono = time.time(), 1000.0

    def __call__(self):
        return self.wall

    def monotonic(self):
        return self.mono


def test_a_forward_step_of_the_wall_clock_does_not_admit_a_folder_being_copied(ws):
    clock = SteppedClock()
    engine = Engine(ws.config(), clock=clock)
    engine.start(workers=False)
    try:
        (ws.inbox / "copying").mkdir()
        (ws.inbox / "copying" / "part1").write_bytes(b"x" * 100)
        engine.tick()
        assert ws.case("copying").state == "detected"
        clock.wall += 3600  # the copy pauses; the wall clock jumps an hour
        clock.mono += 0.1
        engine.tick()
        assert ws.case("copying").state == "detected"
        quiet = ws.settings["stability"]["quiet_seconds"]
        clock.mono += quiet  # now it is quiet for real
        clock.wall += quiet
        engine.tick()
        assert ws.case("copying").state != "detected"
    finally:
        engine.shutdown()
        engine.store.close()


# -- found by trying to break the fixes (an adversarial review) -------------------------------
def test_a_child_that_leaves_the_jobs_group_is_stopped_before_the_job_ends(tmp_path):
    """A child in a session of its own (setsid) still carries the job's label: the job ends
    only once it is gone."""
    backend = DirectBackend(LocalTransport("local", str(tmp_path / "remote")))
    job = _spec(tmp_path, "escaper", f"setsid sleep 300 & echo $! > {tmp_path}/child; exit 0", 1)
    ref = JobRef(job.case_id, backend.submit(job), job.label, job.remote_path)
    status = wait_for(lambda: (s := backend.status([ref])[1]).outcome != RUNNING and s,
                      what="the job to end")
    assert status.exit_code == 0
    assert not process_alive(int((tmp_path / "child").read_text()))


def test_a_child_whose_command_name_holds_a_newline_is_not_missed(tmp_path):
    """/proc/PID/stat is read whole: a command name with a newline splits it over lines."""
    odd = tmp_path / "bin" / "a\nb"
    odd.parent.mkdir()
    shutil.copy("/bin/sleep", odd)
    backend = DirectBackend(LocalTransport("local", str(tmp_path / "remote")))
    job = _spec(tmp_path, "newline", ["sh", "-c", '"$0" 300 & echo $! > "$1"; exit 0',
                                     str(odd), str(tmp_path / "child")], 1)
    ref = JobRef(job.case_id, backend.submit(job), job.label, job.remote_path)
    wait_for(lambda: backend.status([ref])[1].outcome != RUNNING, what="the job to end")
    assert not process_alive(int((tmp_path / "child").read_text()))


def test_a_restart_keeps_the_slot_of_a_job_found_by_its_label(ws):
    """A case ended while its job (task id never stored) could not be stopped keeps its slot
    across a restart (reconcile_slots used to free it: the task id was its only sign)."""
    engine = Engine(ws.config())
    engine.start(workers=False)
    try:
        store = engine.store
        case = store.create_case("kept", str(ws.inbox / "kept"), "0:0", "uploaded", 0, 0)
        slot = store.free_slot("gpu_a", ["local"])
        store.commit_transition(case, "uploaded", "uploaded", "t", 1, take_slot=slot.id)
        store.set_stopping(case, "uploaded", "cancel requested", 2)
        store.commit_transition(case, "uploaded", "failure", "cancel", 3, {"wrapup": 1})
        assert store.reconcile_slots(engine.spec.slot_states) == []
        assert store.get(case).slot_id == slot.id
    finally:
        engine.shutdown()
        engine.store.close()


def test_a_job_whose_submit_answer_was_lost_and_ended_brings_its_results(ws):
    """Giving up on a submit whose answers are lost finds a job that ran to its end: its
    results come home (the case still fails: caseflow gave up)."""
    ws.write_config(retry={"initial_seconds": 0.2, "max_seconds": 0.5,
                           "give_up_after_seconds": 2})
    config = ws.config()
    engine = Engine(config, transport=LostReplies("local", str(config.hosts[0].transport.root)))
    from caseflow.daemon import Daemon
    ws.daemon = Daemon(config, engine=engine)
    import threading
    ws._thread = threading.Thread(target=ws.daemon.run, daemon=True)
    ws._thread.start()
    wait_for(ws.daemon.ready.is_set, what="the daemon to start")
    ws.drop_case("quick")
    row = ws.wait_state("quick", "failure", timeout=90)
    assert row.job_outcome == "success" and row.results_fetched
    assert (Path(row.results_path) / "output" / "result.txt").exists()


class RealClock:
    """The real clocks, with a wall clock that can be stepped."""

    def __init__(self):
        self.step = 0.0

    def __call__(self):
        return time.time() + self.step

    def monotonic(self):
        return time.monotonic()


def test_the_stop_grace_is_not_cut_short_by_a_step_of_the_wall_clock(ws):
    only_gpu_b(ws, SLOW_STOP_JOB)
    ws.write_config(stop_grace_seconds=30)
    clock = RealClock()
    engine = Engine(ws.config(), clock=clock)
    engine.start(workers=False)
    try:
        ws.drop_case("ckpt")
        wait_for(lambda: (engine.tick(), times(ws, "ckpt"))[1], what="the job to start")
        ws.store.set_request(ws.case("ckpt").id, "cancel")
        wait_for(lambda: (engine.tick(), ws.case("ckpt").stop_sent == 1)[1], what="the TERM")
        clock.step = 3600  # the wall clock jumps an hour during the checkpoint
        wait_for(lambda: (engine.tick(), ws.case("ckpt").state == "failure")[1],
                 what="the cancel to end")
        assert ws.case("ckpt").stop_sent == 1  # never KILLed
        assert [w for w, _ in times(ws, "ckpt")] == ["start", "end"]  # its checkpoint ended
    finally:
        engine.shutdown()
        engine.store.close()


def test_a_folder_replaced_while_the_daemon_was_down_is_not_run_by_the_old_case(ws):
    """ext4 gives the new copy the old folder's inode nearly always: the folder's ctime when
    the case took it tells them apart."""
    only_gpu_b(ws, JOB)
    engine = Engine(ws.config())
    engine.start(workers=False)
    ws.drop_case("blocker", hold="blocker")
    wait_for(lambda: (engine.tick(), (r := ws.case("blocker")) and r.state == "running")[1], what="blocker")
    ws.drop_case("data", files={"part1.bin": b"old" * 10, "part2.bin": b"old"})
    wait_for(lambda: (engine.tick(), (r := ws.case("data")) and r.state == "queued")[1], what="queued")
    engine.shutdown()
    engine.store.close()
    inode = os.stat(ws.inbox / "data").st_ino
    shutil.rmtree(ws.inbox / "data")
    (ws.inbox / "data").mkdir()  # the new copy begins while no daemon runs
    (ws.inbox / "data" / "part1.bin").write_bytes(b"NEW" * 10)
    print(f"inode reused: {os.stat(ws.inbox / 'data').st_ino == inode}")
    ws.release("blocker")
    again = Engine(ws.config())
    again.start(workers=False)
    try:
        old = ws.case("data").id
        wait_for(lambda: (again.tick(), ws.store.get(old).state == "failure")[1], what="old")
        assert "replaced by a new copy" in ws.store.get(old).reason
        assert ws.store.get(old).remote_path is None
        (ws.inbox / "data" / "part2.bin").write_bytes(b"NEW")  # the copy ends
        wait_for(lambda: (again.tick(), len(ws.cases("data")) == 2)[1], what="the new case")
        new = ws.case("data")
        wait_for(lambda: (again.tick(), ws.store.get(new.id).state == "success")[1],
                 what="the new copy to run")
        assert Path(ws.store.get(new.id).remote_path, "part2.bin").read_bytes() == b"NEW"
    finally:
        again.shutdown()
        again.store.close()


def test_a_job_log_comes_home_byte_for_byte(ws):
    """Bytes that are not UTF-8 in a job's output are kept as they were (direct runner; the
    pueue backend's own test is in tests/test_pueue_local.py)."""
    written = b"before\xffafter\nerr\xfe\ncaf\xc3\xa9\n"
    ws.write_config(backend={"kind": "direct", "command":
                             r"printf 'before\377after\n'; printf 'err\376\n' >&2; "
                             r"printf 'caf\303\251\n'"})
    ws.start()
    ws.drop_case("bytes")
    row = ws.wait_state("bytes", "success")
    assert (Path(row.results_path) / "caseflow-job.log").read_bytes() == written
    assert (ws.var / "logs" / f"{row.id}-1.log").read_bytes() == written


def test_a_retry_asked_while_a_kept_slot_is_being_freed_does_not_starve_it(ws):
    """Found by the randomized test: a retry asked while the ended case still kept its slot
    failed ("its earlier job is still being stopped"), pushed the case's next attempt on each
    time, and the wrap-up that frees the slot, due at the same moment, never ran."""
    ws.write_config(retry={"initial_seconds": 0.2, "max_seconds": 0.5})
    engine = Engine(ws.config())
    engine.start(workers=False)
    try:
        store = engine.store
        ws.make_case("kept", where=ws.inbox)
        case = store.create_case("kept", str(ws.inbox / "kept"), "0:0", "uploaded", 0, 0)
        slot = store.free_slot("gpu_a", ["local"])
        store.commit_transition(case, "uploaded", "uploaded", "t", 1, take_slot=slot.id)
        store.set_stopping(case, "uploaded", "cancel requested", 2)
        store.commit_transition(case, "uploaded", "failure", "cancel", 3, {"wrapup": 1})
        store.set_request(case, "retry")
        wait_for(lambda: (engine.tick(), store.get(case).slot_id is None)[1],
                 what="the kept slot to be freed")
        wait_for(lambda: (engine.tick(), store.get(case).run == 2)[1], what="the retry")
    finally:
        engine.shutdown()
        engine.store.close()
