"""The store's queries of GPU slots and hosts: the slot pool kept in step with the
configured hosts, free slots, and what is known about each host (its problem, its notice)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from .schema import Database, SlotRow


def _slot_name(host: str, grp: str, idx: int) -> str:
    return f"{grp}[{idx}] on {host}" if host else f"{grp}[{idx}]"


def release_held(conn: sqlite3.Connection, case_id: int) -> list[int]:
    """Free the slot `case_id` holds, within the caller's transaction; a retired slot goes.
    Returns the ids of the slots freed."""
    ids = [r[0] for r in conn.execute("SELECT id FROM slots WHERE case_id = ?", (case_id,))]
    conn.execute("UPDATE slots SET case_id = NULL WHERE case_id = ?", (case_id,))
    conn.execute("DELETE FROM slots WHERE case_id IS NULL AND retired = 1")
    return ids


class SlotQueries(Database):
    def release_slot(self, case_id: int) -> None:
        """Free the slot an ended case kept for a job that may have run on (see Case)."""
        with self.transaction() as conn:
            release_held(conn, case_id)

    def sync_slots(self, hosts) -> list[str]:
        """Make the slot table match the configured hosts and their groups; idempotent.

        New slots appear; slots of removed hosts or groups (or beyond a lowered count)
        are retired: deleted when free, kept until released when a case holds them.
        Returns a line per change, for the log.
        """
        changes = []
        with self.transaction() as conn:
            # slots from before there were several hosts: the first host serving the group
            for (grp,) in conn.execute("SELECT DISTINCT grp FROM slots WHERE host = ''").fetchall():
                owner = next((h.name for h in hosts if h.group(grp) is not None), None)
                if owner is not None:
                    conn.execute(
                        "UPDATE slots SET host = ? WHERE host = '' AND grp = ?", (owner, grp)
                    )
            wanted = {}
            for h in hosts:
                for g in h.groups:
                    for i in range(g.slots):
                        wanted[(h.name, g.name, i)] = g.device_of(i)
            existing = {
                (r[1], r[2], r[3]): r
                for r in conn.execute(
                    "SELECT id, host, grp, idx, device, case_id, retired FROM slots"
                )
            }
            for key, device in wanted.items():
                row = existing.get(key)
                if row is None:
                    conn.execute(
                        "INSERT INTO slots (host, grp, idx, device) VALUES (?, ?, ?, ?)",
                        (*key, device),
                    )
                    changes.append(f"slot {_slot_name(*key)} added")
                elif row[4] != device or row[6]:
                    conn.execute(
                        "UPDATE slots SET device = ?, retired = 0 WHERE id = ?", (device, row[0])
                    )
                    changes.append(f"slot {_slot_name(*key)} updated")
            for key, row in existing.items():
                if key in wanted:
                    continue
                if row[5] is None:
                    conn.execute("DELETE FROM slots WHERE id = ?", (row[0],))
                    changes.append(f"slot {_slot_name(*key)} removed")
                elif not row[6]:
                    conn.execute("UPDATE slots SET retired = 1 WHERE id = ?", (row[0],))
                    changes.append(f"slot {_slot_name(*key)} retired; case {row[5]} still holds it")
        return changes

    def free_slot_counts(self) -> dict[str, dict[str, int]]:
        """{group: {host: free slots}}, for telling at once whether a queued case can move."""
        out: dict[str, dict[str, int]] = {}
        for grp, host, n in self.connection().execute(
            "SELECT grp, host, COUNT(*) FROM slots WHERE case_id IS NULL AND retired = 0"
            " GROUP BY grp, host"
        ):
            out.setdefault(grp, {})[host] = n
        return out

    def free_slot(self, group: str, hosts: Sequence[str] | None = None) -> SlotRow | None:
        """A free slot of the group, on one of `hosts` (all when None): on the host with
        the most free slots of the group (spreading the load), the earlier host on a tie."""
        rows = (
            self.connection()
            .execute(
                "SELECT id, grp, idx, device, case_id, retired, host FROM slots WHERE grp = ?"
                " AND case_id IS NULL AND retired = 0 ORDER BY idx",
                (group,),
            )
            .fetchall()
        )
        if hosts is not None:
            rows = [r for r in rows if r[6] in hosts]
        if not rows:
            return None
        order = list(hosts) if hosts is not None else sorted({r[6] for r in rows})
        free = {h: sum(1 for r in rows if r[6] == h) for h in order}
        best = max(order, key=lambda h: (free.get(h, 0), -order.index(h)))
        r = next(r for r in rows if r[6] == best)
        return SlotRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), host=r[6])

    def slots(self) -> list[SlotRow]:
        rows = self.connection().execute(
            "SELECT s.id, s.grp, s.idx, s.device, s.case_id, s.retired, c.name, c.state, s.host"
            " FROM slots s LEFT JOIN cases c ON c.id = s.case_id ORDER BY s.host, s.grp, s.idx"
        )
        return [SlotRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8]) for r in rows]

    def reconcile_slots(self, holding_states: Iterable[str]) -> list[tuple]:
        """Free slots held by missing cases or by cases in a state that holds none
        (terminal ones above all), except those an ended case keeps for a job that may
        still run (its wrap-up stops the job first): one with a task id, or one whose stop
        began (`stop_since`: its job, found by label, may have no task id stored); returns
        (slot id, group, index, case id, state) per freed slot, for the log."""
        holding = list(holding_states)
        marks = ",".join("?" * len(holding))
        freed = []
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT s.id, s.grp, s.idx, s.case_id, c.state FROM slots s LEFT JOIN cases c"
                f" ON c.id = s.case_id WHERE s.case_id IS NOT NULL AND (c.id IS NULL OR (c.state"
                f" NOT IN ({marks}) AND NOT (c.wrapup = 1 AND (c.task_id IS NOT NULL OR"
                " c.stop_since IS NOT NULL) AND c.job_outcome IS NULL)))",
                holding,
            ).fetchall()
            for slot_id, grp, idx, case_id, state in rows:
                conn.execute("UPDATE slots SET case_id = NULL WHERE id = ?", (slot_id,))
                freed.append((slot_id, grp, idx, case_id, state or "missing"))
            conn.execute("DELETE FROM slots WHERE case_id IS NULL AND retired = 1")
        return freed

    # -- hosts -------------------------------------------------------------------------
    def wake_host(self, host: str, holding_states: Iterable[str], now: float) -> int:
        """The host answers again: its cases waiting out a backoff are due now (not after
        the rest of a long backoff). Returns how many."""
        states = list(holding_states)
        marks = ",".join("?" * len(states))
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE cases SET next_attempt_at = ? WHERE next_attempt_at > ? AND"
                f" (state IN ({marks}) OR wrapup = 1) AND (host = ? OR id IN"
                " (SELECT case_id FROM slots WHERE host = ? AND case_id IS NOT NULL))",
                (now, now, *states, host, host),
            )
            return cur.rowcount

    def set_host_problem(
        self, name: str, problem: str | None, now: float, kind: str = "config"
    ) -> None:
        """What is wrong with the host (None: nothing). `since` is when a problem of this
        kind began: kept while the text changes, new when the kind does."""
        with self.transaction() as conn:
            if problem is None:
                conn.execute(
                    "UPDATE hosts SET problem = NULL, since = NULL, kind = NULL, updated = ?"
                    " WHERE name = ?",
                    (now, name),
                )
            else:
                # since was left NULL by an earlier clear: "PAUSED since None" (issue 27)
                conn.execute(
                    "INSERT INTO hosts (name, problem, since, kind, updated) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET problem = excluded.problem,"
                    " since = CASE WHEN hosts.since IS NOT NULL AND hosts.kind IS excluded.kind"
                    " THEN hosts.since ELSE excluded.since END,"
                    " kind = excluded.kind, updated = excluded.updated",
                    (name, problem, now, kind, now),
                )

    def set_host_notice(self, name: str, notice: str | None, now: float) -> None:
        """Something about the host a person should know that does not stop caseflow's work
        (e.g. a paused pueue group)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO hosts (name, notice, updated) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET notice = excluded.notice,"
                " updated = excluded.updated",
                (name, notice, now),
            )

    def set_host_drain(self, name: str, reason: str | None, now: float) -> bool:
        """Drain the host (`reason`, kept with the time) or stop draining it (None); whether
        that changed anything."""
        with self.transaction() as conn:
            row = conn.execute("SELECT drain FROM hosts WHERE name = ?", (name,)).fetchone()
            if reason is None:
                if row is None or row[0] is None:
                    return False
                conn.execute(
                    "UPDATE hosts SET drain = NULL, drain_since = NULL, updated = ? WHERE name = ?",
                    (now, name),
                )
                return True
            conn.execute(
                "INSERT INTO hosts (name, drain, drain_since, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET drain = excluded.drain,"
                " drain_since = COALESCE(hosts.drain_since, excluded.drain_since),"
                " updated = excluded.updated",
                (name, reason, now, now),
            )
            return True

    def host_drains(self) -> dict[str, tuple[str, float]]:
        """The drained hosts: name -> (reason, since)."""
        rows = (
            self.connection()
            .execute("SELECT name, drain, drain_since FROM hosts WHERE drain IS NOT NULL")
            .fetchall()
        )
        return {name: (reason, since) for name, reason, since in rows}

    def host_notices(self) -> list[tuple[str, str]]:
        return (
            self.connection()
            .execute("SELECT name, notice FROM hosts WHERE notice IS NOT NULL ORDER BY name")
            .fetchall()
        )

    def host_problems(self) -> list[tuple[str, str, float, str]]:
        """The hosts with a problem: (name, problem, since, kind)."""
        return (
            self.connection()
            .execute(
                "SELECT name, problem, since, COALESCE(kind, 'config') FROM hosts"
                " WHERE problem IS NOT NULL ORDER BY name"
            )
            .fetchall()
        )
