"""The engine's scheduling, driven tick by tick with a clock the test moves."""

import threading
import time
from pathlib import Path

import pytest

from caseflow.core.engine import Engine
from caseflow.errors import PermanentError, TransientError
from caseflow.transports.local import LocalTransport
from harness import wait_for


class Clock:
    """A wall clock the test moves; it is the engine's monotonic clock too (`monotonic`)."""

    def __init__(self):
        import time
        self.now = time.time()

    def __call__(self):
        return self.now

    def monotonic(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class FlakyTransport(LocalTransport):
    """Uploads fail with the given errors first; uploads of `block` wait for an event."""

    def __init__(self, root, errors=(), block=None):
        super().__init__("local", root)
        self.errors = list(errors)
        self.block = block or {}
        self.uploads = []

    def upload_dir(self, local_dir, remote_path, manifest, progress=None):
        self.uploads.append(Path(local_dir).name)
        gate = self.block.get(Path(local_dir).name)
        if gate is not None:
            assert gate.wait(60)
        if self.errors:
            raise self.errors.pop(0)
        return super().upload_dir(local_dir, remote_path, manifest, progress)


@pytest.fixture
def make_engine(ws):
    engines = []

    def make(transport=None, workers=True, **settings):
        if settings:
            ws.write_config(**settings)
        clock = Clock()
        engine = Engine(ws.config(), transport=transport, clock=clock)
        engine.start(workers=workers)
        engines.append(engine)
        return engine, clock

    yield make
    for e in engines:
        e.shutdown()
        e.store.close()


def state_of(ws, name):
    row = ws.case(name)
    return row.state if row else None


def run_until(engine, clock, predicate, step=1.0, what=""):
    def go():
        clock.advance(step)
        engine.tick()
        return predicate()
    return wait_for(go, what=what)


def test_transient_errors_back_off_in_the_store_then_succeed(ws, make_engine):
    t = FlakyTransport(str(ws.remote), errors=[TransientError("network down"),
                                               TransientError("still down")])
    engine, clock = make_engine(transport=t, workers=False,
                                retry={"initial_seconds": 10, "max_seconds": 100})
    ws.drop_case("flaky")
    run_until(engine, clock, lambda: ws.case("flaky") and state_of(ws, "flaky") == "gpu_locked")
    engine.tick()  # first upload attempt fails
    row = ws.case("flaky")
    assert (row.state, row.attempts) == ("gpu_locked", 1)
    assert "network down" in row.last_error
    assert row.next_attempt_at == pytest.approx(clock.now + 10)
    assert row.slot_index is not None  # the slot stays with the case while it retries
    clock.advance(5)
    engine.tick()
    assert ws.case("flaky").attempts == 1  # not due yet
    clock.advance(6)
    engine.tick()
    row = ws.case("flaky")
    assert row.attempts == 2 and row.next_attempt_at == pytest.approx(clock.now + 20)
    run_until(engine, clock, lambda: state_of(ws, "flaky") == "success", step=25)
    row = ws.case("flaky")
    assert (row.attempts, row.last_error) == (0, None)
    assert t.uploads.count("flaky") == 3


def test_backoff_survives_a_restart(ws, make_engine):
    t = FlakyTransport(str(ws.remote), errors=[TransientError("down")] * 50)
    engine, clock = make_engine(transport=t, workers=False,
                                retry={"initial_seconds": 30, "max_seconds": 300})
    ws.drop_case("persisted")
    run_until(engine, clock, lambda: ws.case("persisted").attempts >= 2)
    due = ws.case("persisted").next_attempt_at
    engine.shutdown()
    again, clock2 = make_engine(transport=t, workers=False)
    clock2.now = clock.now
    assert ws.case("persisted").next_attempt_at == due
    n = len(t.uploads)
    again.tick()
    assert len(t.uploads) == n  # the restart did not reset the backoff


def test_giving_up_after_the_retry_window(ws, make_engine):
    t = FlakyTransport(str(ws.remote), errors=[TransientError("unreachable")] * 100)
    engine, clock = make_engine(transport=t, workers=False,
                                retry={"initial_seconds": 60, "max_seconds": 600,
                                       "give_up_after_seconds": 3600})
    ws.drop_case("doomed")
    run_until(engine, clock, lambda: state_of(ws, "doomed") == "failure", step=600)
    row = ws.case("doomed")
    assert "gave up after" in row.reason and "unreachable" in row.reason
    assert row.slot_index is None


def test_a_permanent_error_fails_the_case_with_its_reason_and_frees_the_slot(ws, make_engine):
    t = FlakyTransport(str(ws.remote), errors=[PermanentError("remote folder is read-only")])
    engine, clock = make_engine(transport=t, workers=False)
    ws.drop_case("perm")
    run_until(engine, clock, lambda: state_of(ws, "perm") == "failure")
    row = ws.case("perm")
    assert row.reason == "remote folder is read-only"
    assert all(s.case_id is None for s in ws.store.slots())


def test_an_unexpected_error_is_shown_on_the_case(ws, make_engine):
    t = FlakyTransport(str(ws.remote), errors=[ZeroDivisionError("division by zero")])
    engine, clock = make_engine(transport=t, workers=False)
    ws.drop_case("bug")
    run_until(engine, clock, lambda: state_of(ws, "bug") == "failure")
    assert ws.case("bug").reason.startswith("internal error during upload: division by zero")


def upload_held(ws, make_engine, name):
    """A case whose upload has started in the worker pool and hangs until `gate` is set."""
    gate = threading.Event()
    t = FlakyTransport(str(ws.remote), block={name: gate})
    engine, clock = make_engine(transport=t, workers=True)
    ws.drop_case(name)
    run_until(engine, clock, lambda: name in t.uploads, step=0.5)
    return gate, engine, clock


def test_a_slow_upload_does_not_hold_up_other_cases(ws, make_engine):
    gate, engine, clock = upload_held(ws, make_engine, "slow")
    ws.drop_case("fast")
    try:
        run_until(engine, clock, lambda: state_of(ws, "fast") == "success", step=0.5,
                  what="the fast case to finish while the slow upload hangs")
        assert state_of(ws, "slow") == "gpu_locked"
    finally:
        gate.set()
    run_until(engine, clock, lambda: state_of(ws, "slow") == "success", step=0.5)


def test_a_cancel_waits_for_the_step_in_flight(ws, make_engine):
    gate, engine, clock = upload_held(ws, make_engine, "busy")
    ws.store.set_request(ws.case("busy").id, "cancel")
    clock.advance(1)
    engine.tick()
    assert ws.case("busy").request == "cancel"  # not applied under a running upload
    gate.set()
    run_until(engine, clock, lambda: state_of(ws, "busy") == "failure", step=0.5)
    row = ws.case("busy")
    assert (row.reason, row.request, row.task_id) == ("cancelled", None, None)
    assert [h[2] for h in ws.history("busy")][-1] == "cancel"


def test_a_request_that_is_not_possible_is_dropped(ws, make_engine):
    engine, clock = make_engine(workers=False)
    ws.drop_case("done")
    run_until(engine, clock, lambda: state_of(ws, "done") == "success")
    ws.store.set_request(ws.case("done").id, "cancel")
    engine.tick()
    row = ws.case("done")
    assert (row.state, row.request) == ("success", None)


def test_unknown_group_in_case_file_fails_with_reason(ws, make_engine):
    engine, clock = make_engine(workers=False)
    ws.drop_case("lost", files={"x": "1", "case.yaml": "group: gpu_zz\n"})
    run_until(engine, clock, lambda: state_of(ws, "lost") == "failure")
    assert "unknown group 'gpu_zz'" in ws.case("lost").reason
    assert ws.case("lost").slot_index is None


def test_each_transition_is_one_log_line_with_id_and_name(ws, make_engine, caplog):
    engine, clock = make_engine(workers=False)
    ws.drop_case("logged")
    run_until(engine, clock, lambda: state_of(ws, "logged") == "success")
    cid = ws.case("logged").id
    lines = [r.getMessage() for r in caplog.records if r.name == "caseflow.case"]
    mine = [l for l in lines if l.startswith(f"case {cid} 'logged': ")]
    assert len(mine) == 6  # stabilize, enqueue, lock_gpu, upload, submit, complete
    assert mine[-1].startswith(f"case {cid} 'logged': running -> success (complete)")


def test_higher_priority_takes_a_free_slot_first_then_the_oldest(ws, make_engine):
    engine, clock = make_engine(workers=False)
    ws.drop_case("holder", group="gpu_b", hold="h")
    run_until(engine, clock, lambda: state_of(ws, "holder") == "running")
    ws.drop_case("old-low", files={"x": "1", "case.yaml": "group: gpu_b\n"})
    run_until(engine, clock, lambda: state_of(ws, "old-low") == "queued")
    ws.drop_case("new-high", files={"x": "1", "case.yaml": "group: gpu_b\npriority: 5\n"})
    ws.drop_case("new-low", files={"x": "1", "case.yaml": "group: gpu_b\n"})
    run_until(engine, clock, lambda: state_of(ws, "new-high") == "queued"
              and state_of(ws, "new-low") == "queued")
    assert ws.case("new-high").priority == 5
    ws.release("h")
    order = []

    def next_locked():
        for name in ("old-low", "new-high", "new-low"):
            if name not in order and state_of(ws, name) not in ("queued",):
                order.append(name)
        return len(order) == 3
    run_until(engine, clock, next_locked, step=0.5)
    assert order == ["new-high", "old-low", "new-low"]


def test_steps_starting_at_once_share_one_transport_and_one_backend(ws, monkeypatch):
    """A host's transport and backend are made on first use, by whichever lane thread comes
    first; several at once must not make one each (a second SSH connection, never closed)."""
    from caseflow.core import hosts

    made = []
    make = hosts.make_transport

    def slow(cfg):  # the time a real one takes to read the SSH config, widened
        made.append(cfg)
        time.sleep(0.05)
        return make(cfg)

    monkeypatch.setattr(hosts, "make_transport", slow)
    host = hosts.Host(ws.config().hosts[0])
    start = threading.Barrier(8)
    seen = []

    def first_step():
        start.wait()
        seen.append((host.backend, host.transport))

    threads = [threading.Thread(target=first_step) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1
    assert len({id(b) for b, _ in seen}) == 1 and len({id(t) for _, t in seen}) == 1
