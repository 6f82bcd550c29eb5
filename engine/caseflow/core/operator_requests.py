"""The operator's requests (`caseflow retry`, `caseflow cancel`).

The command line records a request in the store; the daemon applies it at its next tick,
in the short lane of the case's host (a cancel stops the job on the host), after any step in
flight for the case. A request that ends a case whose job may run (`cancel`) first stops
the job (caseflow.core.jobs.stop: TERM, KILL after the grace) and ends the case once the job is
seen gone; the case keeps its slot until then. A request that cannot be applied yet (its
host does not answer) is tried again after a backoff of the retry policy, not at every
tick. Which triggers an operator may ask for is the spec's `request` role; whether one is
possible now, the machine's answer.
"""

from __future__ import annotations

import logging

from ..spec import REQUEST
from ..store import CaseRow
from .context import Core

log = logging.getLogger("caseflow.engine")


class OperatorRequests:
    """Applies the requests for one engine; knows each case's backoff after a failed try."""

    def __init__(self, core: Core):
        self.core = core
        # case id: (failed tries, monotonic time before which it is not tried again)
        self.wait: dict[int, tuple[int, float]] = {}

    def apply_all(self) -> None:
        core, now = self.core, self.core.monotonic()
        requested = core.store.requested()
        for case_id in set(self.wait) - {r.id for r in requested}:
            del self.wait[case_id]
        for row in requested:
            if row.id in core.inflight or now < self.wait.get(row.id, (0, 0.0))[1]:
                continue  # after the step in flight, or the backoff of a failed attempt
            if row.wrapup:
                # after the ended case's wrap-up (its job stopped, its slot freed): a retry
                # tried meanwhile failed and pushed the case's next attempt on, and the
                # wrap-up, due at the same time, never ran (the randomized test: a slot kept
                # for good)
                continue
            self.apply(row)

    def apply(self, row: CaseRow) -> bool:
        """Apply the case's request now (in its host's lane while the daemon runs: then the
        outcome is not known here, and False is returned)."""
        core, trigger = self.core, row.request
        if (
            trigger is None
            or trigger not in core.spec.triggers_for(REQUEST)
            or not core.machine.allowed(trigger, row.state)
        ):
            log.warning(
                "case %s %r: %s request dropped: not possible in state %s",
                row.id,
                row.name,
                trigger,
                row.state,
            )
            core.store.set_request(row.id, None)
            return False
        if row.reason and row.state in core.job_states:
            return False  # its job is being stopped; the request ends the case then (jobs.stop)
        if core.spec.dest_of(trigger, row.state) in core.spec.terminal_states and (
            core.outcomes.stop_first(row, f"{trigger} requested")
        ):
            return False  # a job may run: it is stopped first; the case keeps its slot till then
        if core.pooled:
            core.lanes.call(row, self._apply_now, row, trigger, short=True)
            return False
        return self._apply_now(row, trigger)

    def _apply_now(self, row: CaseRow, trigger: str) -> bool:
        moved = bool(self.core.step(row, trigger, requested=True))
        if not moved:
            attempts = self.wait.get(row.id, (0, 0.0))[0] + 1
            self.wait[row.id] = (
                attempts,
                self.core.monotonic() + self.core.config.retry.delay(attempts),
            )
        return moved
