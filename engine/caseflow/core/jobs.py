"""The jobs of running cases: one batched poll per host, a job's end, and stopping a job
before its case fails.

All of it runs in the host's lane (caseflow.core.hosts), never on the tick thread. Each
function takes the core's context (caseflow.core.context.Core), whose `settle` (the retry
policy, caseflow.core.outcomes) turns what a job's host ran into into the case's next move.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from .. import durations, metrics
from ..backends import LOST, RUNNING, SUCCESS, UNREADABLE, JobRef, JobStatus
from ..errors import PermanentError, TransientError
from ..retry import PERMANENT, Streak, kind_of, short
from ..spec import REQUEST
from ..store import CaseRow, JobTimes
from .case_model import job_ref
from .context import Core
from .hosts import Host
from .workers import QUIET

log = logging.getLogger("caseflow.engine")


def poll(core: Core, host: Host, rows: list[CaseRow]) -> object:
    """Ask the host's queue about all its running cases in one call; act on the answers.
    What cannot be read about one job (UNREADABLE) is that job's problem alone: its case is
    charged a transient attempt and every other case is judged on its own entry.

    Returns QUIET when every job was seen still running: nothing for a tick to do (a job's
    end dispatches its own step, whose end wakes the loop; a host answering again wakes it)."""
    rows = [r for r in rows if r.id not in core.inflight]
    if not rows:
        return QUIET
    try:
        with metrics.poll_timer(host.name):
            answers = host.backend.status([job_ref(r, core.instance) for r in rows])
    except Exception as exc:
        if kind_of(exc) == PERMANENT:
            exc = PermanentError(f"the queue's status could not be read: {short(exc)}")
        for i, row in enumerate(rows):
            core.outcomes.settle(row, "poll", exc, trace=i == 0)
        return None
    core.health.answered(host)
    core.health.note(host, host.backend.notice())
    now = core.clock()
    quiet = True
    for row in rows:
        status = answers.get(row.id)
        if status is None:
            continue
        if status.outcome == RUNNING:
            if row.reason is None and Streak.of(row).broken:  # a good poll is a success
                core.store.reset_streak(row.id, row.state)
            if status.detail != row.queue_status:
                core.store.set_queue_status(row.id, row.state, status.detail)
            start = durations.on_running(row.id, _times(row), status, now, _submitted(core, row))
            if start is not None:
                core.store.note_job_start(row.id, row.state, start)
            continue
        quiet = False
        if status.outcome == UNREADABLE:
            core.outcomes.settle(
                row,
                "poll",
                TransientError(
                    status.detail or "its entry in the queue's answer could not be read"
                ),
            )
            continue
        # remembered first, so that fetching the results survives a restart
        core.store.record_job_end(
            row.id,
            row.state,
            status.outcome,
            status.detail,
            status.exit_code,
            now,
            durations.on_end(row.id, _times(row), status, now, _submitted(core, row)),
        )
        ended = core.store.get(row.id)
        if ended is not None and ended.job_outcome:
            finish(core, ended)
    return QUIET if quiet else None


def _times(row: CaseRow) -> JobTimes:
    return JobTimes(row.job_started, row.job_ended, row.job_times_source)


def _submitted(core: Core, row: CaseRow) -> Callable[[], float | None]:
    """When the case's submit was sent (asked only when a queue's time is to be checked)."""
    return lambda: core.store.entered(row.id, core.spec.job_states)


def finish(core: Core, row: CaseRow) -> None:
    """The job of a running case ended: fetch its results, then end the case (in failure,
    with its reason, when it was to fail)."""
    if row.reason:
        core.lanes.step(row, core.FAIL, job_ended=True, reason=row.reason)
        return
    if row.job_outcome is None:  # not ended (the tick and the poll call it for ended jobs)
        return
    if row.job_outcome == LOST:
        rerun(core, row)
        return
    trigger = core.spec.job_end_trigger(row.job_outcome)
    key = "detail" if trigger == core.spec.job_end_trigger(SUCCESS) else "reason"
    core.lanes.step(row, trigger, job_ended=True, **{key: row.job_detail})


def rerun(core: Core, row: CaseRow) -> None:
    """The job was taken away by the infrastructure (LOST: its node failed, it was preempted,
    its host rebooted; none of its processes runs): the case runs again as a new run, at most
    `retry.infrastructure_reruns` times; past that it ends in failure with the cause and the
    count. (A job caseflow was stopping never comes here: `finish` ends it as asked.)"""
    budget = core.config.retry.infrastructure_reruns
    cause = row.job_detail or "taken away by the infrastructure"
    if row.reruns >= budget:
        core.lanes.step(
            row,
            core.FAIL,
            job_ended=True,
            reason=f"{cause}; lost to the infrastructure {row.reruns + 1} times, not run again "
            f"(retry.infrastructure_reruns: {budget})",
        )
        return
    lead = f"rerun {row.reruns + 1} of {budget}: "  # before the results' words, or the cause
    core.lanes.step(
        row, core.spec.job_end_trigger(LOST), job_ended=True, lead=lead, detail=lead + cause
    )


class StillRunning(Exception):
    """The job was asked to stop and is still running: look again at the next poll."""


def _stopped(core: Core, row: CaseRow) -> JobStatus | None:
    """Stop the case's job, step by step: find it when its task id was never stored (a submit
    whose answer was lost), ask the queue about it, and while it runs send TERM (once), then
    KILL once `stop_grace_seconds` have passed since the stop began. Returns how the job was
    seen to end (a JobStatus), or None when there is no job (never submitted, or its host is
    no longer configured: its slots are retired). Raises StillRunning while it runs, and what
    the host ran into."""
    try:
        host = core.host_of(row)
    except PermanentError:
        return None
    ref = job_ref(row, core.instance)
    if not row.task_id:
        found = host.backend.find(ref)
        if found is None:
            return None
        log.warning(
            "case %s %r: found job %s, started by a submit whose answer was lost",
            row.id,
            row.name,
            found,
        )
        core.store.set_task_id(row.id, row.state, found)
        ref = replace(ref, task_id=found)
    # signal first, then look: a queue that cannot tell how its job is still gets the stop,
    # and a job that cannot be signalled may be seen to have ended
    refused: Exception | None = None
    try:
        _signal(core, row, host, ref)
    except Exception as exc:
        refused = exc
    try:
        status = host.backend.status([ref]).get(row.id)
    except Exception:
        if refused is not None:
            raise refused from None
        raise
    if status is not None and status.outcome not in (RUNNING, UNREADABLE):
        return status
    if refused is not None:
        raise refused
    if status is not None and status.outcome == UNREADABLE:  # it cannot be seen to end
        raise TransientError(status.detail or "the queue's entry for the job cannot be read")
    raise StillRunning()


def _signal(core: Core, row: CaseRow, host: Host, ref: JobRef) -> None:
    """TERM once; KILL (again at each look) once `stop_grace_seconds` have passed since the
    stop began, on the monotonic clock (a step of the wall clock killed a job 0.4 s after its
    TERM); after a restart the grace counts from the first look again."""
    mono = core.monotonic()
    began = core.stop_began.setdefault(row.id, mono)
    if row.stop_sent == 0:
        host.backend.cancel(ref)
        core.store.note_stop_sent(row.id, row.state, 1, core.clock())
    elif mono - began >= core.config.stop_grace_seconds:
        if row.stop_sent < 2:
            log.warning(
                "case %s %r: its job still runs %.0f s after SIGTERM; sending SIGKILL",
                row.id,
                row.name,
                mono - began,
            )
        host.backend.cancel(ref, force=True)
        core.store.note_stop_sent(row.id, row.state, 2, core.clock())


def _end_trigger(core: Core, row: CaseRow) -> tuple[str, dict]:
    """How a case being stopped ends: by the operator's request that stopped it (`cancel`),
    else by the spec's fail trigger."""
    request = row.request
    if (
        request
        and request in core.spec.triggers_for(REQUEST)
        and core.machine.allowed(request, row.state)
    ):
        return request, {"requested": True}
    return core.FAIL, {"reason": row.reason}


def stop(core: Core, row: CaseRow) -> object:
    """Stop the job of a case that is to end (its reason is set: `Engine.stop_first`), then
    end the case once the job is seen gone; until then the case stays where it is, holding
    its slot (status: stopping). A job that cannot be reached now does not keep the case from
    ending, but its slot stays held (the direct runner would otherwise start a second job on
    the same GPU) until the case's wrap-up has stopped the job or seen it end (`stop_kept`)."""
    try:
        ended = _stopped(core, row)
    except StillRunning:
        core.store.reschedule(row.id, row.state, core.clock() + core.config.poll_seconds)
        return QUIET
    except Exception as exc:
        trigger, kwargs = _end_trigger(core, row)
        core.step(
            row,
            trigger,
            **kwargs,
            keep_slot=True,
            detail=f"{row.reason}; its job could not be stopped or seen to end ({short(exc)}): "
            "the case keeps its slot until the job is seen gone",
        )
        return None
    core.stop_began.pop(row.id, None)
    trigger, kwargs = _end_trigger(core, row)
    if ended is None:
        core.step(row, trigger, **kwargs, detail=f"{row.reason}; no job of it runs")
        return None
    now = core.clock()
    core.store.record_job_end(
        row.id,
        row.state,
        ended.outcome,
        ended.detail,
        ended.exit_code,
        now,
        durations.on_end(row.id, _times(row), ended, now, _submitted(core, row)),
    )
    fresh = core.store.get(row.id) or row
    kwargs["job_ended"] = True  # a job ran: its log and what it wrote are fetched
    core.step(fresh, trigger, **kwargs, detail=f"{row.reason}; its job ended: {ended.detail}")
    return None


def stop_kept(core: Core, row: CaseRow) -> bool:
    """For the wrap-up of a case that ended keeping its slot: stop its job, then free the
    slot once the job is seen gone. True when the slot is free (or was never kept); False:
    tried again later."""
    if row.slot_id is None or row.job_outcome:
        return True
    try:
        _stopped(core, row)
    except StillRunning:
        core.store.wrapup_progress(
            row.id,
            row.state,
            retry_at=core.clock() + core.config.poll_seconds,
            note="stopping its job (the case keeps its slot until the job is gone)",
        )
        return False
    except Exception as exc:
        core.outcomes.settle(row, "stopping its job", exc, patient=True)
        return False
    core.store.release_slot(row.id)
    core.stop_began.pop(row.id, None)
    log.info("case %s %r: its job is gone; its slot is free", row.id, row.name)
    core.wake()
    return True
