"""The operator's requests (`caseflow retry`, `caseflow cancel`).

The command line records a request in the store; the daemon applies it at its next tick,
in the short lane of the case's host (a cancel stops the job on the host), after any step in
flight for the case. A request that ends a case whose job may run (`cancel`) first stops
the job (caseflow.jobs.stop: TERM, KILL after the grace) and ends the case once the job is
seen gone; the case keeps its slot until then. A request that cannot be applied yet (its
host does not answer) is tried again after a backoff of the retry policy, not at every
tick. Which triggers an operator may ask for is the spec's `request` role; whether one is
possible now, the machine's answer.
"""

from __future__ import annotations

import logging

from .spec import REQUEST
from .store import CaseRow

log = logging.getLogger("caseflow.engine")


def apply_all(engine) -> None:
    now = engine.monotonic()
    requested = engine.store.requested()
    for case_id in set(engine.request_wait) - {r.id for r in requested}:
        del engine.request_wait[case_id]
    for row in requested:
        if row.id in engine.inflight or now < engine.request_wait.get(row.id, (0, 0.0))[1]:
            continue  # after the step in flight, or the backoff of a failed attempt
        if row.wrapup:
            # after the ended case's wrap-up (its job stopped, its slot freed): a retry tried
            # meanwhile failed and pushed the case's next attempt on, and the wrap-up, due at
            # the same time, never ran (the randomized test: a slot kept for good)
            continue
        apply(engine, row)


def apply(engine, row: CaseRow) -> bool:
    """Apply the case's request now (in its host's lane while the daemon runs: then the
    outcome is not known here, and False is returned)."""
    trigger = row.request
    if (
        trigger is None
        or trigger not in engine.spec.triggers_for(REQUEST)
        or not engine.machine.allowed(trigger, row.state)
    ):
        log.warning(
            "case %s %r: %s request dropped: not possible in state %s",
            row.id,
            row.name,
            trigger,
            row.state,
        )
        engine.store.set_request(row.id, None)
        return False
    if row.reason and row.state in engine.job_states:
        return False  # its job is being stopped; the request ends the case then (jobs.stop)
    if engine.spec.dest_of(trigger, row.state) in engine.spec.terminal_states and (
        engine.stop_first(row, f"{trigger} requested")
    ):
        return False  # a job may run: it is stopped first, and the case keeps its slot till then
    if engine.pooled:
        engine._dispatch_call(row, _apply_now, engine, row, trigger, short=True)
        return False
    return _apply_now(engine, row, trigger)


def _apply_now(engine, row: CaseRow, trigger: str) -> bool:
    moved = bool(engine.step(row, trigger, requested=True))
    if not moved:
        attempts = engine.request_wait.get(row.id, (0, 0.0))[0] + 1
        engine.request_wait[row.id] = (attempts, engine.monotonic() + engine.policy.delay(attempts))
    return moved
