"""What needs a person: the overview's first part (and `attention` in /api/summary), under
the banner of hosts that are not healthy.

Four short lists of cases, each with how many there are in all:
- failed: ended in a final state other than success (failure, not_found) in the last
  RECENT_HOURS, except those an operator cancelled (as the CaseflowCaseFailed alert);
- retrying: active, their last attempt failed, waiting out a backoff (`last_error`);
- waiting: their next step needs a host that cannot take work now (unreachable, paused,
  drained: views.host_waits), as their state text says;
- stuck: active, not retrying, with no job on a queue (a job may run for days), and
  unchanged (no move, no failed attempt) for STUCK_HOURS: a copy that never gets quiet, a
  case waiting that long for a slot (the CaseflowQueueOld alert's bound), a step that hangs.

The states come from the spec's flags, never from their names. Each list is one or two
queries that stop after SHOWN cases (store.reader: by the state index).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..spec import MachineSpec
from ..store import CaseRow, HistoryRow
from ..store.reader import StatusReader
from ..views import case_json, iso

RECENT_HOURS = 24
STUCK_HOURS = 4
SHOWN = 5  # cases of each list


@dataclass(frozen=True)
class Attention:
    failed_states: dict[str, int]  # per final state other than success, in RECENT_HOURS
    failed: list[CaseRow]  # the latest of them
    retrying_total: int
    retrying: list[CaseRow]  # those failing longest
    waiting_total: int
    waiting: list[CaseRow]  # the oldest
    stuck_total: int
    stuck: list[CaseRow]  # those unchanged longest
    since: float  # failed since

    @property
    def failed_total(self) -> int:
        return sum(self.failed_states.values())

    @property
    def nothing(self) -> bool:
        totals = (self.failed_total, self.retrying_total, self.waiting_total, self.stuck_total)
        return not any(totals)

    def json(
        self, now: float, waits: Mapping[str, str], histories: Mapping[int, list[HistoryRow]]
    ) -> dict:
        """`attention` in /api/summary: each case as `caseflow status --json` lists it
        (`histories`: theirs, for their durations)."""

        def cases(rows: list[CaseRow]) -> list[dict]:
            return [
                case_json(r, now=now, history=histories.get(r.id, []), waits=waits) for r in rows
            ]

        return {
            "failed": {
                "hours": RECENT_HOURS,
                "since": iso(self.since),
                "states": self.failed_states,
                "total": self.failed_total,
                "cases": cases(self.failed),
            },
            "retrying": {"total": self.retrying_total, "cases": cases(self.retrying)},
            "waiting": {"total": self.waiting_total, "cases": cases(self.waiting)},
            "stuck": {"hours": STUCK_HOURS, "total": self.stuck_total, "cases": cases(self.stuck)},
        }

    @property
    def rows(self) -> list[CaseRow]:
        """Every case listed."""
        return [*self.failed, *self.retrying, *self.waiting, *self.stuck]


def ended_badly(spec: MachineSpec) -> list[str]:
    """The final states a case should not end in (failure, not_found)."""
    good = set(spec.succeeded_states)
    return [s for s in spec.terminal_states if s not in good]


def attention(
    reader: StatusReader, spec: MachineSpec, waits: Mapping[str, str], now: float
) -> Attention:
    terminal, polled = set(spec.terminal_states), set(spec.poll_states)
    # an operator's request that ends a case (cancel) is no failure to look at
    by_request = [
        t.trigger for t in spec.transitions if "request" in t.roles and t.dest in terminal
    ]
    bad = ended_badly(spec)
    since = now - RECENT_HOURS * 3600
    per_state, failed = reader.ended_since(bad, since, by_request, SHOWN)
    retrying_total, retrying = reader.retrying(spec.active_states, SHOWN)
    hosts = [name for name in waits if not name.startswith("group ")]  # (no space in a host)
    groups = [name[len("group ") :] for name in waits if name.startswith("group ")]
    waiting_total, waiting = reader.waiting_on(
        # as views.state_cell: holding a slot, its next step is work on the host; or about
        # to take a slot of a group none of whose hosts takes work
        [s for s in spec.slot_states if s not in polled],
        hosts,
        spec.slot_taking_states,
        groups,
        SHOWN,
    )
    stuck_total, stuck = reader.unchanged(
        [s for s in spec.active_states if s not in polled], now - STUCK_HOURS * 3600, SHOWN
    )
    return Attention(
        failed_states={s: per_state.get(s, 0) for s in bad},
        failed=failed,
        retrying_total=retrying_total,
        retrying=retrying,
        waiting_total=waiting_total,
        waiting=waiting,
        stuck_total=stuck_total,
        stuck=stuck,
        since=since,
    )
