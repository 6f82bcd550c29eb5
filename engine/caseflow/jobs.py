"""The jobs of running cases: one batched poll per host, a job's end, and stopping a job
before its case fails.

All of it runs in the host's lane (caseflow.hosts), never on the tick thread. Each function
takes the engine, whose retry policy (`_settle`) turns what a job's host ran into into the
case's next move.
"""

from __future__ import annotations

from .backends import RUNNING, SUCCESS, UNREADABLE
from .case_model import job_ref
from .errors import PermanentError, TransientError
from .retry import PERMANENT, Streak, kind_of, short
from .store import CaseRow


def poll(engine, host, rows: list[CaseRow]) -> None:
    """Ask the host's queue about all its running cases in one call; act on the answers.
    What cannot be read about one job (UNREADABLE) is that job's problem alone: its case is
    charged a transient attempt and every other case is judged on its own entry."""
    rows = [r for r in rows if r.id not in engine.inflight]
    if not rows:
        return
    try:
        answers = host.backend.status([job_ref(r, engine.instance) for r in rows])
    except Exception as exc:
        if kind_of(exc) == PERMANENT:
            exc = PermanentError(f"the queue's status could not be read: {short(exc)}")
        for i, row in enumerate(rows):
            engine._settle(row, "poll", exc, trace=i == 0)
        return
    engine.health.answered(host)
    engine.health.note(host, host.backend.notice())
    now = engine.clock()
    for row in rows:
        status = answers.get(row.id)
        if status is None:
            continue
        if status.outcome == UNREADABLE:
            engine._settle(row, "poll", TransientError(
                status.detail or "its entry in the queue's answer could not be read"))
            continue
        if status.outcome == RUNNING:
            if row.reason is None and Streak.of(row).broken:  # a good poll is a success
                engine.store.reset_streak(row.id, row.state)
            if status.detail != row.queue_status:
                engine.store.set_queue_status(row.id, row.state, status.detail)
            continue
        # remembered first, so that fetching the results survives a restart
        engine.store.record_job_end(row.id, row.state, status.outcome, status.detail,
                                    status.exit_code, now)
        ended = engine.store.get(row.id)
        if ended is not None and ended.job_outcome:
            finish(engine, ended)


def finish(engine, row: CaseRow) -> None:
    """The job of a running case ended: fetch its results, then end the case (in failure,
    with its reason, when it was to fail)."""
    if row.reason:
        engine._dispatch(row, engine.FAIL, job_ended=True, reason=row.reason)
        return
    trigger = engine.spec.job_end_trigger(row.job_outcome)
    key = "detail" if trigger == engine.spec.job_end_trigger(SUCCESS) else "reason"
    engine._dispatch(row, trigger, job_ended=True, **{key: row.job_detail})


def stop(engine, row: CaseRow) -> None:
    """Stop the job of a case that is to fail (its reason is set); then the case fails and
    its slot is free. Until the job is stopped or seen to end, the case keeps its slot: the
    direct runner would otherwise start a second job on the same GPU."""
    host, ref = engine.host_of(row), job_ref(row, engine.instance)
    try:
        host.backend.cancel(ref)
    except Exception as exc:
        try:  # it may have ended meanwhile: then that is the end it is seen to have
            status = host.backend.status([ref]).get(row.id)
        except Exception:
            status = None
        if status is None or status.outcome in (RUNNING, UNREADABLE):
            engine._settle(row, "stopping its job", exc, patient=True)
            return
        engine.store.record_job_end(row.id, row.state, status.outcome, status.detail,
                                    status.exit_code, engine.clock())
        engine.step(engine.store.get(row.id) or row, engine.FAIL, job_ended=True,
                    reason=row.reason)
        return
    engine.step(row, engine.FAIL, reason=row.reason, detail=f"{row.reason}; its job was stopped")
