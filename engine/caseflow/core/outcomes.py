"""Outcomes: what a case's work ran into becomes its next move.

`settle` is the retry policy applied (caseflow.retry): a stale step is skipped, a permanent
error fails the case, a host's problem pauses the host (a case not uploaded yet moves to
another host of its group), a transient one is tried again after a backoff or, once the
streak is too long, the case gives up. `fail` and `stop_first` end a case; a case whose job
may still run stops the job first and keeps its slot until the job is seen gone.
"""

from __future__ import annotations

import logging

from .. import metrics
from ..errors import HostError, PermanentError
from ..retry import BUG, HOST, PERMANENT, STALE, GiveUp, Streak, after_error, kind_of, short
from ..spec import REQUEUE
from ..store import CaseRow
from .context import Core
from .hosts import Host, is_unreachable

log = logging.getLogger("caseflow.engine")


class Outcomes:
    """Settles the outcomes of one engine's work (`Core.settle`, `.fail`, `.stop_first`)."""

    def __init__(self, core: Core):
        self.core = core
        self.requeue = core.spec.trigger_for(REQUEUE)

    def fail(self, case_id: int, reason: str) -> bool:
        """End the case in failure. A case whose job may still run first stops it (in its
        host's short lane, caseflow.core.jobs.stop), showing the reason meanwhile; it keeps its
        slot until the job is seen gone (two jobs would share a GPU)."""
        row = self.core.store.get(case_id)
        if row is None or not self.core.machine.allowed(self.core.FAIL, row.state):
            return False
        if self.stop_first(row, reason):
            return False
        return bool(self.core.step(row, self.core.FAIL, reason=reason))

    def stop_first(self, row: CaseRow, reason: str) -> bool:
        """If a job of the case may exist (a state of the spec's `job_may_run`, its end not
        seen yet), mark the case to end with `reason` once the job is gone and return True:
        caseflow.core.jobs.stop sends TERM, then KILL after `stop_grace_seconds`, and ends the case
        when the job's processes are seen gone. A case in `uploaded` may have a job whose
        submit's answer was lost: the job is found by its label."""
        if (
            row.state not in self.core.job_states
            or row.job_outcome
            or self.host_or_none(row) is None
        ):
            return False
        if row.reason is None and self.core.store.set_stopping(
            row.id, row.state, reason, self.core.clock()
        ):
            log.warning(
                "case %s %r: %s; stopping its job first (the case keeps its slot until then)",
                row.id,
                row.name,
                reason,
            )
            self.core.wake()
        return True

    def settle(
        self,
        row: CaseRow,
        what: str,
        exc: BaseException,
        *,
        patient: bool = False,
        bug_fails: bool = False,
        trace: bool = True,
    ) -> None:
        """What the case's work (`what`) ran into becomes its next move: the retry policy.
        `patient`: never give up and never fail here (stopping a job, a wrap-up); `trace`:
        log a bug's traceback (once per backoff: the case is not tried again before)."""
        kind = kind_of(exc)
        if kind == STALE:
            log.info("case %s: %s skipped: %s", row.id, what, exc)
            return
        if kind == PERMANENT and not patient:
            self.fail(row.id, short(exc))
            return
        if kind == BUG and bug_fails:
            log.error("case %s: unexpected error in %s", row.id, what, exc_info=exc)
            self.fail(row.id, f"internal error during {what}: {short(exc)} (see the log)")
            return
        host = self.host_or_none(row)
        if kind == HOST and host is not None and isinstance(exc, HostError):
            problem = self.core.health.pause(host, exc)
            if not self.move_elsewhere(row, host, problem):
                self.core.store.reschedule(
                    row.id, row.state, self.core.clock() + self.core.config.retry.max_seconds
                )
            return
        if is_unreachable(exc) and host is not None:
            self.core.health.unreachable(host, exc)
            if self.move_elsewhere(row, host, short(exc)):
                return
        elif host is not None and kind != STALE:
            self.core.health.errored(host)  # a probe soon says whether the host is the trouble
        now = self.core.clock()
        fresh = self.core.store.get(row.id) or row  # the streak as it is now
        verdict = after_error(
            self.core.config.retry, Streak.of(fresh), exc, now, what, patient=patient
        )
        metrics.attempt_failed(what)
        if isinstance(verdict, GiveUp):
            metrics.gave_up(what)
            self.fail(row.id, verdict.reason)
            return
        self.core.store.note_failure(
            row.id,
            row.state,
            verdict.streak.attempts,
            verdict.streak.failing_since,
            verdict.error,
            verdict.next_attempt_at,
            now,
        )
        log.warning(
            "case %s %r: %s failed (attempt %d), next try in %.0f s: %s",
            row.id,
            row.name,
            what,
            verdict.streak.attempts,
            verdict.next_attempt_at - now,
            short(exc),
            exc_info=exc if kind == BUG and trace else None,
        )

    def host_or_none(self, row: CaseRow) -> Host | None:
        try:
            return self.core.host_of(row)
        except PermanentError:
            return None

    def move_elsewhere(self, row: CaseRow, host: Host, why: str) -> bool:
        """A case holding a slot on `host` but not uploaded yet goes back to the queue, to
        take a slot on another host serving its group (cases already uploaded stay)."""
        if self.requeue is None or not self.core.machine.allowed(self.requeue, row.state):
            return False
        if not [n for n in self.core.health.usable_for(row.grp) if n != host.name]:
            return False
        return bool(self.core.step(row, self.requeue, detail=f"host {host.name}: {why}"))
