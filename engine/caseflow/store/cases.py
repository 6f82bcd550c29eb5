"""The store's queries of cases: finding them, and every change of one, each in one
transaction guarded by the state the case was loaded in (a transition, its history row and
its slot bookkeeping commit together, so a crash leaves every case in exactly one state)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from ..errors import StaleCase
from .schema import CASE_SELECT, CHANGEABLE, HISTORY_SELECT, CaseRow, Database, HistoryRow, JobTimes
from .slots import release_held


class CaseQueries(Database):
    @staticmethod
    def _case(row) -> CaseRow:
        return CaseRow(*row)

    def create_case(
        self,
        name: str,
        local_path: str,
        inode: str | None,
        state: str,
        now: float,
        next_attempt_at: float,
        detail: str | None = None,
    ) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO cases (name, local_path, inode, state, next_attempt_at, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, local_path, inode, state, next_attempt_at, now, now),
            )
            case_id = cur.lastrowid
            conn.execute(
                "INSERT INTO history (case_id, src, dst, trigger, at, detail)"
                " VALUES (?, NULL, ?, 'detect', ?, ?)",
                (case_id, state, now, detail),
            )
        return case_id

    def get(self, case_id: int) -> CaseRow | None:
        row = self.connection().execute(CASE_SELECT + " WHERE c.id = ?", (case_id,)).fetchone()
        return self._case(row) if row else None

    def find(self, ref: str) -> list[CaseRow]:
        """Cases whose id or name is `ref` (a name may be shared by several cases)."""
        conn = self.connection()
        rows = conn.execute(CASE_SELECT + " WHERE c.name = ? ORDER BY c.id", (ref,)).fetchall()
        if ref.isdigit():
            rows += conn.execute(CASE_SELECT + " WHERE c.id = ?", (int(ref),)).fetchall()
        seen, out = set(), []
        for r in rows:
            if r[0] not in seen:
                seen.add(r[0])
                out.append(self._case(r))
        return out

    def cases(self, states: Iterable[str] | None = None) -> list[CaseRow]:
        conn = self.connection()
        if states is None:
            rows = conn.execute(CASE_SELECT + " ORDER BY c.id").fetchall()
        else:
            states = list(states)
            marks = ",".join("?" * len(states))
            rows = conn.execute(
                CASE_SELECT + f" WHERE c.state IN ({marks}) ORDER BY c.id", states
            ).fetchall()
        return [self._case(r) for r in rows]

    def due_cases(
        self,
        now: float,
        states: Iterable[str],
        *,
        unpolled_only: bool = False,
        group: str | None = None,
        limit: int | None = None,
        skip: Collection[int] = (),
    ) -> list[CaseRow]:
        """Cases in `states` whose next step is due, highest priority first, then oldest.
        `unpolled_only`: only those with something to do besides a poll (their job has ended
        and its results are still to fetch, or it is being stopped: `reason` is set before
        the case ends); `group`, `limit`: only the first `limit` of that group; `skip`: ids
        not wanted (cases whose step is in flight: their rows are not read at all)."""
        states = list(states)
        if not states or limit == 0:
            return []
        marks = ",".join("?" * len(states))
        where = [f"c.state IN ({marks})", "c.next_attempt_at <= ?"]
        values: list = [*states, now]
        if unpolled_only:
            where.append("(c.job_outcome IS NOT NULL OR c.reason IS NOT NULL)")
        if group is not None:
            where.append("c.grp = ?")
            values.append(group)
        order = " ORDER BY c.priority DESC, c.created_at, c.id"
        if skip:
            return self._rows_of(
                self._ids(
                    "SELECT c.id FROM cases c WHERE " + " AND ".join(where) + order,
                    values,
                    skip,
                    limit,
                )
            )
        tail = ""
        if limit is not None:
            tail = " LIMIT ?"
            values.append(limit)
        rows = (
            self.connection()
            .execute(
                CASE_SELECT + " WHERE " + " AND ".join(where) + order + tail,
                values,
            )
            .fetchall()
        )
        return [self._case(r) for r in rows]

    def due_outside_groups(
        self, now: float, states: Iterable[str], groups: Iterable[str]
    ) -> list[CaseRow]:
        """Due cases in `states` whose group is none of `groups` (no longer configured)."""
        states, groups = list(states), list(groups)
        if not states:
            return []
        rows = (
            self.connection()
            .execute(
                CASE_SELECT + f" WHERE c.state IN ({','.join('?' * len(states))})"
                f" AND c.next_attempt_at <= ? AND (c.grp IS NULL OR c.grp NOT IN"
                f" ({','.join('?' * len(groups))})) ORDER BY c.id",
                (*states, now, *groups),
            )
            .fetchall()
        )
        return [self._case(r) for r in rows]

    def cases_at(self, local_path: str, states: Iterable[str]) -> list[CaseRow]:
        """The cases in `states` made from the folder at `local_path`."""
        states = list(states)
        rows = (
            self.connection()
            .execute(
                CASE_SELECT
                + f" WHERE c.local_path = ? AND c.state IN ({','.join('?' * len(states))})"
                " ORDER BY c.id",
                (local_path, *states),
            )
            .fetchall()
        )
        return [self._case(r) for r in rows]

    def next_due(self, states: Iterable[str], after: float | None = None) -> float | None:
        """The earliest next_attempt_at among cases in `states` (later than `after`)."""
        states = list(states)
        if not states:
            return None
        marks = ",".join("?" * len(states))
        return (
            self.connection()
            .execute(
                f"SELECT MIN(next_attempt_at) FROM cases WHERE state IN ({marks})"
                " AND next_attempt_at > ?",
                (*states, float("-inf") if after is None else after),
            )
            .fetchone()[0]
        )

    def folders(self) -> list[tuple[str, str | None, str]]:
        """(local_path, inode, state) of every case, oldest first, for telling new folders
        from known ones."""
        return (
            self.connection()
            .execute("SELECT local_path, inode, state FROM cases ORDER BY id")
            .fetchall()
        )

    def commit_transition(
        self,
        case_id: int,
        src: str,
        dst: str,
        trigger: str,
        now: float,
        changes: dict | None = None,
        take_slot: int | None = None,
        release_slot: bool = False,
        detail: str | None = None,
    ) -> None:
        """Apply one transition with its bookkeeping, atomically.

        Raises StaleCase (and changes nothing) when the case is no longer in `src`
        or the slot to take is no longer free.
        """
        changes = dict(changes or {})
        bad = set(changes) - CHANGEABLE
        if bad:
            raise ValueError(f"not changeable by a transition: {sorted(bad)}")
        changes.setdefault("attempts", 0)
        sets = [
            "state = ?",
            "updated_at = ?",
            "next_attempt_at = ?",
            "failing_since = NULL",
            "progress_bytes = NULL",
            "progress_total = NULL",
            "queue_status = NULL",
        ]
        values: list = [dst, now, now]
        if "last_error" not in changes:
            sets.append("last_error = NULL")
        for k, v in changes.items():
            sets.append(f"{k} = ?")
            values.append(v)
        with self.transaction() as conn:
            cur = conn.execute(
                f"UPDATE cases SET {', '.join(sets)} WHERE id = ? AND state = ?",
                (*values, case_id, src),
            )
            if cur.rowcount != 1:
                raise StaleCase(f"case {case_id} is no longer {src}")
            if take_slot is not None:
                cur = conn.execute(
                    "UPDATE slots SET case_id = ? WHERE id = ? AND case_id IS NULL AND retired = 0",
                    (case_id, take_slot),
                )
                if cur.rowcount != 1:
                    raise StaleCase(f"slot {take_slot} was taken meanwhile")
            if release_slot:
                release_held(conn, case_id)
            # with the job's times as they are now: the row that ends a run keeps its job's
            conn.execute(
                "INSERT INTO history (case_id, src, dst, trigger, at, detail, job_started,"
                " job_ended, job_times_source) SELECT ?, ?, ?, ?, ?, ?, job_started,"
                " job_ended, job_times_source FROM cases WHERE id = ?",
                (case_id, src, dst, trigger, now, detail, case_id),
            )

    def note_failure(
        self,
        case_id: int,
        state: str,
        attempts: int,
        failing_since: float | None,
        error: str,
        next_attempt_at: float,
        now: float,
    ) -> None:
        """The case's failure streak grew (see caseflow.retry): keep it and the next try."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cases SET attempts = ?, failing_since = ?, last_error = ?,"
                " next_attempt_at = ?, updated_at = ? WHERE id = ? AND state = ?",
                (attempts, failing_since, error, next_attempt_at, now, case_id, state),
            )

    def reset_streak(self, case_id: int, state: str) -> None:
        """Something worked for the case (a good poll): its failure streak is over."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cases SET attempts = 0, failing_since = NULL, last_error = NULL"
                " WHERE id = ? AND state = ?",
                (case_id, state),
            )

    def set_stopping(self, case_id: int, state: str, reason: str, now: float) -> bool:
        """The case is to fail with `reason` once its job is stopped (or seen to end); it
        keeps its state and slot until then, and shows the reason meanwhile. `stop_since`:
        the grace before SIGKILL counts from now."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE cases SET reason = ?, next_attempt_at = ?, updated_at = ?,"
                " stop_since = ?, stop_sent = 0 WHERE id = ? AND state = ? AND reason IS NULL",
                (reason, now, now, now, case_id, state),
            )
            return cur.rowcount == 1

    def note_stop_sent(self, case_id: int, state: str, sent: int, since: float) -> None:
        """A stop signal went to the case's job (1: TERM, 2: KILL); `since`: when stopping
        began (kept when it was set)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cases SET stop_sent = MAX(stop_sent, ?),"
                " stop_since = COALESCE(stop_since, ?) WHERE id = ? AND state = ?",
                (sent, since, case_id, state),
            )

    def set_task_id(self, case_id: int, state: str, task_id: str) -> None:
        """The task id of a job found by its label (its submit's answer was lost)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cases SET task_id = ? WHERE id = ? AND state = ?",
                (task_id, case_id, state),
            )

    def newer_case_at(self, case_id: int, local_path: str) -> int | None:
        """The id of a case made later than `case_id` from a folder at the same path: the
        folder was replaced by a new copy, which is a case of its own."""
        row = (
            self.connection()
            .execute(
                "SELECT id FROM cases WHERE local_path = ? AND id > ? ORDER BY id LIMIT 1",
                (local_path, case_id),
            )
            .fetchone()
        )
        return row[0] if row else None

    def reschedule(self, case_id: int, state: str, next_attempt_at: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cases SET next_attempt_at = ? WHERE id = ? AND state = ?",
                (next_attempt_at, case_id, state),
            )

    def record_job_end(
        self,
        case_id: int,
        state: str,
        outcome: str,
        detail: str,
        exit_code: int | None,
        now: float,
        times: JobTimes | None = None,
    ) -> None:
        """The queue said the job ended: keep how (and when it ran: `times`, see
        caseflow.durations), and make the case due for its results."""
        sets, values = "", []
        if times is not None:
            sets = ", job_started = ?, job_ended = ?, job_times_source = ?"
            values = [times.started, times.ended, times.source]
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cases SET job_outcome = ?, job_detail = ?, exit_code = ?,"
                f" queue_status = NULL, next_attempt_at = ?, updated_at = ?{sets}"
                " WHERE id = ? AND state = ?",
                (outcome, detail, exit_code, now, now, *values, case_id, state),
            )

    def note_job_start(self, case_id: int, state: str, times: JobTimes) -> None:
        """When the job started, as the queue says or as a poll first saw it running."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cases SET job_started = ?, job_times_source = ? WHERE id = ? AND state = ?",
                (times.started, times.source, case_id, state),
            )

    def entered(self, case_id: int, states: Collection[str]) -> float | None:
        """When the case last came into `states` from outside them (for the states a job may
        run in: when its submit was sent, the earliest its job can have started)."""
        states = list(states)
        marks = ",".join("?" * len(states))
        return (
            self.connection()
            .execute(
                f"SELECT MAX(at) FROM history WHERE case_id = ? AND dst IN ({marks})"
                f" AND (src IS NULL OR src NOT IN ({marks}))",
                (case_id, *states, *states),
            )
            .fetchone()[0]
        )

    def set_results_path(self, case_id: int, state: str, path: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cases SET results_path = ? WHERE id = ? AND state = ?",
                (path, case_id, state),
            )

    def results_paths(self) -> set[str]:
        return {
            r[0]
            for r in self.connection().execute(
                "SELECT results_path FROM cases WHERE results_path IS NOT NULL"
            )
        }

    def _ids(self, sql: str, values, skip: Collection[int], limit: int | None) -> list[int]:
        ids = [i for (i,) in self.connection().execute(sql, values) if i not in skip]
        return ids if limit is None else ids[:limit]

    def _rows_of(self, ids: list[int]) -> list[CaseRow]:
        """The cases with these ids, in this order."""
        found: dict[int, CaseRow] = {}
        for start in range(0, len(ids), 500):  # well below SQLite's limit of parameters
            part = ids[start : start + 500]
            rows = (
                self.connection()
                .execute(CASE_SELECT + f" WHERE c.id IN ({','.join('?' * len(part))})", part)
                .fetchall()
            )
            found.update((r[0], self._case(r)) for r in rows)
        return [found[i] for i in ids if i in found]

    def wrapups_due(self, now: float, skip: Collection[int] = ()) -> list[CaseRow]:
        """Terminal cases whose wrap-up (clean-up, archiving, hook) is still to do (but
        those in `skip`)."""
        if skip:
            return self._rows_of(
                self._ids(
                    "SELECT c.id FROM cases c WHERE c.wrapup = 1 AND c.next_attempt_at <= ?"
                    " ORDER BY +c.id",
                    (now,),
                    skip,
                    None,
                )
            )
        rows = (
            self.connection()
            .execute(
                CASE_SELECT + " WHERE c.wrapup = 1 AND c.next_attempt_at <= ? ORDER BY +c.id",
                (now,),
            )
            .fetchall()
        )  # + : the index serves
        return [self._case(r) for r in rows]

    def next_wrapup(self, after: float) -> float | None:
        return (
            self.connection()
            .execute(
                "SELECT MIN(next_attempt_at) FROM cases WHERE wrapup = 1 AND next_attempt_at > ?",
                (after,),
            )
            .fetchone()[0]
        )

    def wrapup_progress(
        self,
        case_id: int,
        state: str,
        *,
        local_path: str | None = None,
        note: str | None = None,
        done: bool = False,
        retry_at: float | None = None,
    ) -> None:
        """Record a wrap-up step: the case folder's new place, a note, done or retry later."""
        sets: list[str] = []
        values: list[object] = []
        if local_path is not None:
            sets.append("local_path = ?")
            values.append(local_path)
        if note is not None:
            sets.append("wrapup_note = ?")
            values.append(note)
        if done:
            sets.append("wrapup = 0")
        if retry_at is not None:
            sets.append("next_attempt_at = ?")
            values.append(retry_at)
        if not sets:
            return
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE cases SET {', '.join(sets)} WHERE id = ? AND state = ? AND wrapup = 1",
                (*values, case_id, state),
            )

    def set_queue_status(self, case_id: int, state: str, text: str | None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cases SET queue_status = ? WHERE id = ? AND state = ?",
                (text, case_id, state),
            )

    def set_progress(self, case_id: int, sent: int, total: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cases SET progress_bytes = ?, progress_total = ? WHERE id = ?",
                (sent, total, case_id),
            )

    def set_request(self, case_id: int, request: str | None) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE cases SET request = ? WHERE id = ?", (request, case_id))

    def requested(self) -> list[CaseRow]:
        rows = self.connection().execute(
            CASE_SELECT + " WHERE c.request IS NOT NULL ORDER BY +c.id"
        )  # + : the partial index serves
        return [self._case(r) for r in rows.fetchall()]

    def history(self, case_id: int) -> list[HistoryRow]:
        rows = (
            self.connection()
            .execute(HISTORY_SELECT + " WHERE case_id = ? ORDER BY id", (case_id,))
            .fetchall()
        )
        return [HistoryRow(*r) for r in rows]

    def histories(self, case_ids: Iterable[int]) -> dict[int, list[HistoryRow]]:
        """The history of each of these cases (for the durations of a list of cases)."""
        ids = list(case_ids)
        out: dict[int, list[HistoryRow]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):  # well below SQLite's limit of parameters
            part = ids[start : start + 500]
            rows = (
                self.connection()
                .execute(
                    HISTORY_SELECT + f" WHERE case_id IN ({','.join('?' * len(part))})"
                    " ORDER BY case_id, id",
                    part,
                )
                .fetchall()
            )
            for r in rows:
                out[r[1]].append(HistoryRow(*r))
        return out
