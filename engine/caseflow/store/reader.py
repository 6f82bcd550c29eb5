"""Read-only queries behind the status page, `/metrics` and `caseflow status --watch`.

They run on a connection of their own, opened read-only (`mode=ro`): nothing served over
HTTP can write the database, whatever a request asks. In WAL mode a reader never blocks
the daemon's writes, so the page never slows the tick. One connection serves every request
thread of the web server, one query at a time (each takes a few milliseconds even with
10,000 cases: the counts come from an index, a page of cases is one LIMIT query).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DISK_LOW, UNREACHABLE
from . import CaseRow, HistoryRow, SlotRow, Store
from .schema import CASE_SELECT, HISTORY_SELECT


class _ReadOnlyStore(Store):
    """The store's own queries (get, history, slots, host problems), on one read-only
    connection shared by the threads that hold `StatusReader.lock`."""

    def __init__(self, path: Path):
        super().__init__(path)
        self._ro: sqlite3.Connection | None = None

    def connection(self) -> sqlite3.Connection:
        if self._ro is None:
            uri = Path(self.path).resolve().as_uri() + "?mode=ro"
            self._ro = sqlite3.connect(
                uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._ro.execute("PRAGMA busy_timeout=30000")
            self._ro.execute("PRAGMA query_only=1")
        return self._ro

    def close(self) -> None:
        if self._ro is not None:
            self._ro.close()
            self._ro = None


@dataclass(frozen=True)
class Count:
    state: str
    group: str | None
    cases: int
    retrying: int  # of them, waiting out a backoff after a failed attempt


@dataclass(frozen=True)
class HostRow:
    name: str
    problem: str | None  # what is wrong with it (unreachable, host key, queue daemon down...)
    since: float | None  # since when (a problem of this kind)
    notice: str | None
    updated: float | None
    drain: str | None = None  # an operator drained the host (`caseflow host pause`): why
    drain_since: float | None = None
    kind: str = "config"  # errors.HOST_PROBLEM_KINDS: which problem it is

    @property
    def paused(self) -> bool:
        """Work on it is paused: it answers but cannot be used (not merely unreachable or
        short of disk, which do not stop work)."""
        return bool(self.problem) and self.kind not in (UNREACHABLE, DISK_LOW)


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class StatusReader:
    """Read-only access to a caseflow database; safe to share between threads."""

    def __init__(self, database: Path | str):
        self.database = Path(database)
        self._store = _ReadOnlyStore(self.database)
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self._store.close()

    def _rows(self, sql: str, params: Sequence = ()) -> list:
        return self._store.connection().execute(sql, params).fetchall()

    # -- counts --------------------------------------------------------------------------
    def counts(self, states: Sequence[str] | None = None) -> list[Count]:
        """Cases per state and group, of `states` (found by the state index: quick for the
        active ones) or of every state (a scan: 25 ms with 10,000 cases on a loaded machine)."""
        where, params = "", []
        if states is not None:
            where, params = f" WHERE state IN ({','.join('?' * len(states))})", list(states)
        with self.lock:
            rows = self._rows(
                "SELECT state, grp, COUNT(*), SUM(last_error IS NOT NULL)"
                f" FROM cases{where} GROUP BY state, grp ORDER BY state, grp",
                params,
            )
        return [Count(s, g, n, r or 0) for s, g, n, r in rows]

    def state_counts(self) -> dict[str, int]:
        """Cases per state, from the state index alone (no row is read)."""
        with self.lock:
            return dict(self._rows("SELECT state, COUNT(*) FROM cases GROUP BY state"))

    def oldest_waiting(self, state: str) -> list[tuple[str | None, float]]:
        """(group, the earliest last change) of the cases in `state`, per group: for a
        queued case, when it was queued (or requeued)."""
        with self.lock:
            return self._rows(
                "SELECT grp, MIN(updated_at) FROM cases WHERE state = ? GROUP BY grp ORDER BY grp",
                (state,),
            )

    def transitions_after(self, last_id: int) -> tuple[int, list[tuple[str, str, int]]]:
        """History rows after `last_id`, counted per (trigger, dest): the newest id and the
        counts, so that a scrape reads only what is new since the previous one."""
        with self.lock:
            newest = self._rows("SELECT COALESCE(MAX(id), 0) FROM history")[0][0]
            rows = self._rows(
                "SELECT trigger, dst, COUNT(*) FROM history WHERE id > ? AND"
                " id <= ? GROUP BY trigger, dst",
                (last_id, newest),
            )
        return newest, rows

    def runs_ended_after(
        self, last_id: int, terminal_states: Sequence[str]
    ) -> tuple[int, list[tuple[HistoryRow, str | None, list[HistoryRow]]]]:
        """The history rows after `last_id` that ended a run (into one of `terminal_states`),
        each with its case's group and its case's history up to it: the newest id and those,
        so that a scrape reads only the runs that ended since the previous one."""
        marks = ",".join("?" * len(terminal_states))
        with self.lock:
            newest = self._rows("SELECT COALESCE(MAX(id), 0) FROM history")[0][0]
            ends = [
                HistoryRow(*r)
                for r in self._rows(
                    HISTORY_SELECT + f" WHERE id > ? AND id <= ? AND dst IN ({marks}) ORDER BY id",
                    (last_id, newest, *terminal_states),
                )
            ]
            ids = sorted({e.case_id for e in ends})
            histories = self._store.histories(ids)
            groups: dict[int, str | None] = {}
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                groups.update(
                    self._rows(
                        f"SELECT id, grp FROM cases WHERE id IN ({','.join('?' * len(part))})",
                        part,
                    )
                )
        return newest, [
            (e, groups.get(e.case_id), [h for h in histories[e.case_id] if h.id <= e.id])
            for e in ends
        ]

    # -- cases ---------------------------------------------------------------------------
    def page(
        self,
        states: Sequence[str] | None = None,
        search: str | None = None,
        offset: int = 0,
        limit: int = 50,
        active_first: Sequence[str] | None = None,
    ) -> tuple[int, list[CaseRow]]:
        """(how many cases match, one page of them), newest first; with `active_first` (the
        terminal states) the active ones oldest first, then the ended ones newest first."""
        where, params = [], []
        if states:
            where.append(f"c.state IN ({','.join('?' * len(states))})")
            params += list(states)
        if search:
            where.append("c.name LIKE ? ESCAPE '\\'")
            params.append(like_pattern(search))
        with self.lock:
            if not active_first:
                return self._slice(where, params, "c.id DESC", offset, limit)
            # two queries that each stop after a page (one sort of every case took 60 ms
            # with 10,000 of them): the active ones by the state index, then the ended ones
            marks = ",".join("?" * len(active_first))
            active_total, active = self._slice(
                where + [f"c.state NOT IN ({marks})"],
                params + list(active_first),
                "c.id",
                offset,
                limit,
            )
            ended_total, ended = self._slice(
                where + [f"c.state IN ({marks})"],
                params + list(active_first),
                "c.id DESC",
                max(0, offset - active_total),
                limit - len(active),
                by_id=True,
            )
        return active_total + ended_total, active + ended

    def _slice(
        self,
        where: list[str],
        params: list,
        order: str,
        offset: int,
        limit: int,
        by_id: bool = False,
    ) -> tuple[int, list[CaseRow]]:
        """How many match (counted by the state index) and one page of them; `by_id`: the
        page read along the ids, not the state index (which would sort every ended case)."""
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        total = self._rows("SELECT COUNT(*) FROM cases c" + clause, params)[0][0]
        if limit <= 0:
            return total, []
        if by_id:
            clause = clause.replace("c.state IN", "+c.state IN")
        rows = self._rows(
            CASE_SELECT + clause + f" ORDER BY {order} LIMIT ? OFFSET ?", [*params, limit, offset]
        )
        return total, [CaseRow(*r) for r in rows]

    # -- what needs a person (the overview's first part: web.attention) ------------------
    # Each finds its cases by the state index and stops after `limit` rows of them; the
    # rest is counted. With 10,000 cases each takes a millisecond or two.
    def ended_since(
        self, states: Sequence[str], since: float, not_by: Sequence[str], limit: int
    ) -> tuple[dict[str, int], list[CaseRow]]:
        """Cases that ended in one of `states` at `since` or later, except those ended by
        one of the triggers `not_by` (an operator's cancel): how many per state, and the
        latest `limit` of them."""
        where = [f"c.state IN ({','.join('?' * len(states))})", "c.updated_at >= ?"]
        params = [*states, since]
        if not_by:
            # the case's last move (history_case index: one lookup per recent case)
            where.append(
                "(SELECT h.trigger FROM history h WHERE h.case_id = c.id"
                f" ORDER BY h.id DESC LIMIT 1) NOT IN ({','.join('?' * len(not_by))})"
            )
            params += list(not_by)
        clause = " WHERE " + " AND ".join(where)
        with self.lock:
            per_state = dict(
                self._rows(
                    f"SELECT c.state, COUNT(*) FROM cases c{clause} GROUP BY c.state", params
                )
            )
            rows = self._rows(
                CASE_SELECT + clause + " ORDER BY c.updated_at DESC LIMIT ?", [*params, limit]
            )
        return per_state, [CaseRow(*r) for r in rows]

    def retrying(self, states: Sequence[str], limit: int) -> tuple[int, list[CaseRow]]:
        """Cases in `states` whose last attempt failed (they wait out a backoff): how many,
        and the `limit` failing longest."""
        where = [f"c.state IN ({','.join('?' * len(states))})", "c.last_error IS NOT NULL"]
        with self.lock:
            return self._slice(where, list(states), "c.failing_since, c.id", 0, limit)

    def unchanged(
        self, states: Sequence[str], before: float, limit: int
    ) -> tuple[int, list[CaseRow]]:
        """Cases in `states`, not retrying, that have not changed (no move, no failed
        attempt) since `before`: how many, and the `limit` unchanged longest."""
        where = [
            f"c.state IN ({','.join('?' * len(states))})",
            "c.last_error IS NULL",
            "c.updated_at < ?",
        ]
        with self.lock:
            return self._slice(where, [*states, before], "c.updated_at, c.id", 0, limit)

    def waiting_on(
        self,
        host_states: Sequence[str],
        hosts: Sequence[str],
        group_states: Sequence[str],
        groups: Sequence[str],
        limit: int,
    ) -> tuple[int, list[CaseRow]]:
        """Cases in `host_states` on one of `hosts`, or in `group_states` of one of `groups`
        (those whose hosts cannot take work now): how many, and the `limit` oldest."""
        either, params = [], []
        for states, column, names in (
            (host_states, "c.host", hosts),
            (group_states, "c.grp", groups),
        ):
            if states and names:
                either.append(
                    f"(c.state IN ({','.join('?' * len(states))})"
                    f" AND {column} IN ({','.join('?' * len(names))}))"
                )
                params += [*states, *names]
        if not either:
            return 0, []
        with self.lock:
            return self._slice(["(" + " OR ".join(either) + ")"], params, "c.id", 0, limit)

    def case(self, case_id: int) -> CaseRow | None:
        with self.lock:
            return self._store.get(case_id)

    def history(self, case_id: int) -> list[HistoryRow]:
        with self.lock:
            return self._store.history(case_id)

    def histories(self, case_ids: Iterable[int]) -> dict[int, list[HistoryRow]]:
        """The histories of a page of cases (their durations), in one query per 500."""
        with self.lock:
            return self._store.histories(case_ids)

    # -- hosts and slots -----------------------------------------------------------------
    def slots(self) -> list[SlotRow]:
        with self.lock:
            return self._store.slots()

    def hosts(self) -> list[HostRow]:
        with self.lock:
            rows = self._rows(
                "SELECT name, problem, since, notice, updated, drain, drain_since,"
                " COALESCE(kind, 'config') FROM hosts"
                " ORDER BY name"
            )
        return [HostRow(*r) for r in rows]
