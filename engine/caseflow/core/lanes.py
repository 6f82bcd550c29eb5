"""The lanes: a case's work runs in its host's worker threads (caseflow.core.workers).

At most one piece of work per case at a time (`InFlight`), never for a row that is out of
date (a step that finished after the tick read its due cases must not run again), a long
step in the host's lane, a short remote call (a poll, a probe, a stop) in its short lane;
without lanes (a one-shot command) the work runs inline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..store import CaseRow
from .context import Core
from .hosts import Host
from .outcomes import Outcomes


class Lanes:
    def __init__(self, core: Core, outcomes: Outcomes):
        self.core = core
        self.outcomes = outcomes

    def step(self, row: CaseRow, trigger: str, **kwargs: Any) -> None:
        """Fire `trigger` for the case in its host's lane."""
        self.call(row, self._step_in_lane, row, trigger, kwargs)

    def call(
        self, row: CaseRow, fn: Callable[..., object], *args: Any, short: bool = False
    ) -> None:
        """Run `fn(*args)` for the case in its host's lane (its short lane for a short remote
        call; inline without lanes), at most one piece of work per case at a time, and never
        for a row that is out of date."""
        if not self.core.inflight.claim(row.id):
            return
        if self.still(row) is None:
            self.core.inflight.release(row.id)
            return
        host = self.outcomes.host_or_none(row) or next(iter(self.core.hosts.values()))
        self.core.inflight.run(host.short_lane if short else host.lane, row.id, fn, args)

    def host_work(self, host: Host, work: str, fn: Callable[..., object], *args: Any) -> bool:
        """A host's own work (a poll, a probe), in its short lane: one of each at a time; a
        shutdown does not wait for it. False: that work is in flight already."""
        if not self.core.inflight.claim((work, host.name)):
            return False
        self.core.inflight.run(host.short_lane, (work, host.name), fn, args, awaited=False)
        return True

    def still(self, row: CaseRow) -> CaseRow | None:
        """The case as the store has it now, if it is still where `row` saw it: a step that
        finished after this tick read its due cases must not be run again on a stale row."""
        fresh = self.core.store.get(row.id)
        if (
            fresh is None
            or fresh.state != row.state
            or fresh.run != row.run
            or fresh.updated_at != row.updated_at
        ):
            return None
        return fresh

    def _step_in_lane(self, row: CaseRow, trigger: str, kwargs: dict[str, Any]) -> None:
        if self.core.step(row, trigger, **kwargs):
            fresh = self.core.store.get(row.id)
            name = (fresh.slot_host or fresh.host) if fresh is not None else None
            if name is not None and name in self.core.hosts:
                # the transport worked; whether the queue's daemon does, its poll says
                self.core.health.answered(self.core.hosts[name], queue=False)
