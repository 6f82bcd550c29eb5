"""The jobs of running cases: one batched poll per host, a job's end, and stopping a job
before its case fails.

All of it runs in the host's lane (caseflow.hosts), never on the tick thread. Each function
takes the engine, whose retry policy (`_settle`) turns what a job's host ran into into the
case's next move.
"""

from __future__ import annotations

import logging

from . import metrics
from .backends import RUNNING, SUCCESS, UNREADABLE
from .case_model import job_ref
from .errors import PermanentError, TransientError
from .retry import PERMANENT, Streak, kind_of, short
from .store import CaseRow
from .workers import QUIET

log = logging.getLogger("caseflow.engine")


def poll(engine, host, rows: list[CaseRow]):
    """Ask the host's queue about all its running cases in one call; act on the answers.
    What cannot be read about one job (UNREADABLE) is that job's problem alone: its case is
    charged a transient attempt and every other case is judged on its own entry.

    Returns QUIET when every job was seen still running: nothing for a tick to do (a job's
    end dispatches its own step, whose end wakes the loop; a host answering again wakes it)."""
    rows = [r for r in rows if r.id not in engine.inflight]
    if not rows:
        return QUIET
    try:
        with metrics.poll_timer(host.name):
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
    quiet = True
    for row in rows:
        status = answers.get(row.id)
        if status is None:
            continue
        if status.outcome == RUNNING:
            if row.reason is None and Streak.of(row).broken:  # a good poll is a success
                engine.store.reset_streak(row.id, row.state)
            if status.detail != row.queue_status:
                engine.store.set_queue_status(row.id, row.state, status.detail)
            continue
        quiet = False
        if status.outcome == UNREADABLE:
            engine._settle(
                row,
                "poll",
                TransientError(
                    status.detail or "its entry in the queue's answer could not be read"
                ),
            )
            continue
        # remembered first, so that fetching the results survives a restart
        engine.store.record_job_end(
            row.id, row.state, status.outcome, status.detail, status.exit_code, now
        )
        ended = engine.store.get(row.id)
        if ended is not None and ended.job_outcome:
            finish(engine, ended)
    return QUIET if quiet else None


def finish(engine, row: CaseRow) -> None:
    """The job of a running case ended: fetch its results, then end the case (in failure,
    with its reason, when it was to fail)."""
    if row.reason:
        engine._dispatch(row, engine.FAIL, job_ended=True, reason=row.reason)
        return
    trigger = engine.spec.job_end_trigger(row.job_outcome)
    key = "detail" if trigger == engine.spec.job_end_trigger(SUCCESS) else "reason"
    engine._dispatch(row, trigger, job_ended=True, **{key: row.job_detail})


def _stop(engine, row: CaseRow):
    """Try to stop the case's job: (stopped, how it was seen to end if it had, the error).
    A job whose host is no longer configured counts as stopped: its slots are retired."""
    try:
        host = engine.host_of(row)
    except PermanentError:
        return True, None, None
    ref = job_ref(row, engine.instance)
    try:
        host.backend.cancel(ref)
        return True, None, None
    except Exception as exc:
        try:  # it may have ended meanwhile: then that is the end it is seen to have
            status = host.backend.status([ref]).get(row.id)
        except Exception:
            status = None
        if status is not None and status.outcome not in (RUNNING, UNREADABLE):
            return True, status, exc
        return False, None, exc


def stop(engine, row: CaseRow) -> None:
    """Stop the job of a running case that is to fail (its reason is set), then end the case.
    A job that cannot be stopped now does not keep the case from ending, but its slot stays
    held (the direct runner would otherwise start a second job on the same GPU) until the
    case's wrap-up has stopped the job or seen it end (`stop_kept`)."""
    stopped, ended, exc = _stop(engine, row)
    if ended is not None:
        engine.store.record_job_end(
            row.id, row.state, ended.outcome, ended.detail, ended.exit_code, engine.clock()
        )
        engine.step(engine.store.get(row.id) or row, engine.FAIL, job_ended=True, reason=row.reason)
    elif stopped:
        engine.step(
            row, engine.FAIL, reason=row.reason, detail=f"{row.reason}; its job was stopped"
        )
    else:
        engine.step(
            row,
            engine.FAIL,
            reason=row.reason,
            keep_slot=True,
            detail=f"{row.reason}; its job could not be stopped ({short(exc)}): the "
            "case keeps its slot until the job is stopped or seen to end",
        )


def stop_kept(engine, row: CaseRow) -> bool:
    """For the wrap-up of a case that ended keeping its slot: stop its job, then free the
    slot. True when the slot is free (or was never kept); False: tried again later."""
    if row.slot_id is None or not row.task_id or row.job_outcome:
        return True
    stopped, _, exc = _stop(engine, row)
    if not stopped:
        engine._settle(row, "stopping its job", exc, patient=True)
        return False
    engine.store.release_slot(row.id)
    log.info("case %s %r: its job is stopped (or has ended); its slot is free", row.id, row.name)
    engine.wake()
    return True
