"""The store's queries behind `caseflow prune`: the cases that ended before a time, their
histories read in bulk for the export, their removal, and the database file's size and
compaction (caseflow.prune decides what to remove; these only read and delete).

A case is removed with every row keyed by it: its history (the slots table refers to cases
too, but a case that holds a slot is never removed). Ids are never reused (the cases and
history tables are AUTOINCREMENT, whose counters VACUUM keeps), so a job label or a kept
job log of a pruned case never names a later case.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from .schema import CASE_SELECT, CaseRow, Database, HistoryRow

_CHUNK = 500  # ids per statement, well below SQLite's limit of parameters


class PruneQueries(Database):
    def ended_before(self, before: float, terminal: Iterable[str]) -> list[CaseRow]:
        """The cases in a terminal state that entered it before `before` (a terminal
        case's `updated_at` is the time it ended: nothing else moves it), oldest first."""
        states = list(terminal)
        marks = ",".join("?" * len(states))
        rows = (
            self.connection()
            .execute(
                CASE_SELECT + f" WHERE c.state IN ({marks}) AND c.updated_at < ? ORDER BY c.id",
                (*states, before),
            )
            .fetchall()
        )
        return [CaseRow(*r) for r in rows]

    def newest_per_folder(self) -> dict[str, int]:
        """The id of the newest case made from each folder path (of every case)."""
        return dict(
            self.connection().execute("SELECT local_path, MAX(id) FROM cases GROUP BY local_path")
        )

    def histories(self, ids: Sequence[int]) -> dict[int, list[HistoryRow]]:
        """The histories of these cases, read a chunk of cases at a time."""
        out: dict[int, list[HistoryRow]] = {i: [] for i in ids}
        conn = self.connection()
        for start in range(0, len(ids), _CHUNK):
            part = list(ids[start : start + _CHUNK])
            for r in conn.execute(
                "SELECT id, case_id, src, dst, trigger, at, detail FROM history"
                f" WHERE case_id IN ({','.join('?' * len(part))}) ORDER BY case_id, id",
                part,
            ):
                out[r[1]].append(HistoryRow(*r))
        return out

    def delete_ended(self, rows: Sequence[CaseRow]) -> list[int]:
        """Remove these cases and their history in one transaction, each only if it is
        still as `rows` has it (same state, run and last change: what was exported is what
        goes) and nothing is left to do for it (its wrap-up done, no request, no slot held).
        Returns the ids removed."""
        seen = {r.id: (r.state, r.run, r.updated_at) for r in rows}
        removed: list[int] = []
        with self.transaction() as conn:
            ids = list(seen)
            for start in range(0, len(ids), _CHUNK):
                part = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(part))
                still = [
                    case_id
                    for case_id, state, run, updated_at in conn.execute(
                        f"SELECT c.id, c.state, c.run, c.updated_at FROM cases c WHERE c.id IN"
                        f" ({marks}) AND c.wrapup = 0 AND c.request IS NULL AND NOT EXISTS"
                        " (SELECT 1 FROM slots s WHERE s.case_id = c.id)",
                        part,
                    )
                    if seen[case_id] == (state, run, updated_at)
                ]
                if not still:
                    continue
                marks = ",".join("?" * len(still))
                conn.execute(f"DELETE FROM history WHERE case_id IN ({marks})", still)
                conn.execute(f"DELETE FROM cases WHERE id IN ({marks})", still)
                removed += still
        return removed

    def file_size(self) -> int:
        """Bytes the database takes on disk: its file and its write-ahead log."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += os.stat(path).st_size
            except FileNotFoundError:
                pass
        return total

    def free_bytes(self) -> int:
        """Bytes of the file that hold nothing (removed rows): reused by new rows."""
        conn = self.connection()
        pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * conn.execute("PRAGMA page_size").fetchone()[0]

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the file and empty it (a large delete or a VACUUM
        leaves a log as large as what it changed); False when a reader still needed it
        (then the daemon's next checkpoints do it)."""
        busy, _, _ = self.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    def compact(self) -> bool:
        """Rewrite the file without its free pages (VACUUM), then empty the log. Writers wait
        meanwhile (the daemon's up to its busy timeout of 60 s): 0.1 s for 8 MB that stay,
        measured on this project's loaded 2-core test machine."""
        self.connection().execute("VACUUM")
        return self.checkpoint()
