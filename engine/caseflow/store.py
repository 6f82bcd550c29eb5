"""The SQLite store: cases, their transition history and the GPU slots, in one file.

WAL mode, one connection per thread (closed when its thread ends: an upload's
short-lived range threads report progress here, and 200 large-file uploads once left 306
connections and 619 open fds behind), schema versioned with `PRAGMA user_version`
and forward migrations. A transition, its history row and its slot bookkeeping
commit in one transaction, guarded by the state the case was loaded in, so a
crash at any point leaves every case in exactly one state.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

from .errors import StaleCase, StoreError

MIGRATIONS: list[str] = [
    # v1: cases, history, slots
    """
    CREATE TABLE cases (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        name            TEXT NOT NULL,
        local_path      TEXT NOT NULL,
        inode           TEXT,
        grp             TEXT,
        state           TEXT NOT NULL,
        host            TEXT,
        remote_path     TEXT,
        task_id         TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        failing_since   REAL,
        last_error      TEXT,
        reason          TEXT,
        request         TEXT,
        run             INTEGER NOT NULL DEFAULT 1,
        file_count      INTEGER,
        size_bytes      INTEGER,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL
    );
    CREATE INDEX cases_due ON cases (state, next_attempt_at);
    CREATE INDEX cases_name ON cases (name);
    CREATE INDEX cases_request ON cases (request) WHERE request IS NOT NULL;
    CREATE TABLE history (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        case_id  INTEGER NOT NULL REFERENCES cases (id),
        src      TEXT,
        dst      TEXT NOT NULL,
        trigger  TEXT NOT NULL,
        at       REAL NOT NULL,
        detail   TEXT
    );
    CREATE INDEX history_case ON history (case_id, id);
    CREATE TABLE slots (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        grp      TEXT NOT NULL,
        idx      INTEGER NOT NULL,
        device   TEXT,
        case_id  INTEGER UNIQUE REFERENCES cases (id),
        retired  INTEGER NOT NULL DEFAULT 0,
        UNIQUE (grp, idx)
    );
    """,
    # v2: upload progress; problems of hosts (paused work)
    """
    ALTER TABLE cases ADD COLUMN progress_bytes INTEGER;
    ALTER TABLE cases ADD COLUMN progress_total INTEGER;
    CREATE TABLE hosts (
        name     TEXT PRIMARY KEY,
        problem  TEXT,
        since    REAL,
        updated  REAL
    );
    """,
    # v3: this database's instance id (in job labels); what the queue last said of a case
    """
    CREATE TABLE meta (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    ALTER TABLE cases ADD COLUMN queue_status TEXT;
    ALTER TABLE hosts ADD COLUMN notice TEXT;
    """,
    # v4: priority from case.yaml (higher takes a free slot first)
    """
    ALTER TABLE cases ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    """,
    # v5: results come home. How the job ended (kept while its results are fetched), where
    # the results went, and the wrap-up (remote clean-up, archiving, hook) still to do.
    """
    ALTER TABLE cases ADD COLUMN job_outcome TEXT;
    ALTER TABLE cases ADD COLUMN job_detail TEXT;
    ALTER TABLE cases ADD COLUMN exit_code INTEGER;
    ALTER TABLE cases ADD COLUMN results_path TEXT;
    ALTER TABLE cases ADD COLUMN results_fetched INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE cases ADD COLUMN wrapup INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE cases ADD COLUMN wrapup_note TEXT;
    CREATE INDEX cases_wrapup ON cases (next_attempt_at) WHERE wrapup = 1;
    """,
    # v6: several hosts; a slot belongs to a host (slots of older databases get theirs from
    # the config at the next start: the first host serving their group)
    """
    CREATE TABLE slots_v6 (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        host     TEXT NOT NULL DEFAULT '',
        grp      TEXT NOT NULL,
        idx      INTEGER NOT NULL,
        device   TEXT,
        case_id  INTEGER UNIQUE REFERENCES cases (id),
        retired  INTEGER NOT NULL DEFAULT 0,
        UNIQUE (host, grp, idx)
    );
    INSERT INTO slots_v6 (id, host, grp, idx, device, case_id, retired)
        SELECT id, '', grp, idx, device, case_id, retired FROM slots;
    DROP TABLE slots;
    ALTER TABLE slots_v6 RENAME TO slots;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# columns a transition may change besides the state
CHANGEABLE = {"grp", "host", "remote_path", "task_id", "reason", "last_error", "file_count",
              "size_bytes", "request", "attempts", "run", "priority", "job_outcome",
              "job_detail", "exit_code", "results_path", "results_fetched", "wrapup",
              "wrapup_note"}


@dataclass(frozen=True)
class CaseRow:
    id: int
    name: str
    local_path: str
    inode: str | None
    grp: str | None
    state: str
    host: str | None
    remote_path: str | None
    task_id: str | None
    attempts: int
    next_attempt_at: float
    failing_since: float | None
    last_error: str | None
    reason: str | None
    request: str | None
    run: int
    file_count: int | None
    size_bytes: int | None
    created_at: float
    updated_at: float
    progress_bytes: int | None
    progress_total: int | None
    queue_status: str | None
    priority: int
    job_outcome: str | None
    job_detail: str | None
    exit_code: int | None
    results_path: str | None
    results_fetched: bool
    wrapup: bool
    wrapup_note: str | None
    slot_id: int | None = None
    slot_index: int | None = None
    slot_device: str | None = None
    slot_host: str | None = None


@dataclass(frozen=True)
class SlotRow:
    id: int
    grp: str
    idx: int
    device: str | None
    case_id: int | None
    retired: bool
    case_name: str | None = None
    case_state: str | None = None
    host: str = ""


@dataclass(frozen=True)
class HistoryRow:
    id: int
    case_id: int
    src: str | None
    dst: str
    trigger: str
    at: float
    detail: str | None


_CASE_COLUMNS = [f.name for f in fields(CaseRow)][:-4]
_CASE_SELECT = ("SELECT " + ", ".join(f"c.{c}" for c in _CASE_COLUMNS) +
                ", s.id, s.idx, s.device, s.host FROM cases c LEFT JOIN slots s"
                " ON s.case_id = c.id")


def _slot_name(host: str, grp: str, idx: int) -> str:
    return f"{grp}[{idx}] on {host}" if host else f"{grp}[{idx}]"


class _ThreadConnection:
    """One thread's connection. Only that thread's thread-local slot holds it, so it is
    closed when the thread ends (CPython drops a thread's thread-local values then)."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    __del__ = close


class Store:
    """All reads and writes of the database. Safe to share between threads."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._local = threading.local()
        self._open: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._lock = threading.Lock()

    # -- connection and schema -------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        held = getattr(self._local, "held", None)
        if held is None:
            conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=60000")
            held = self._local.held = _ThreadConnection(conn)
            with self._lock:
                self._open.add(held)
        return held.conn

    def close(self) -> None:
        with self._lock:
            for held in list(self._open):
                held.close()
            self._open.clear()
        self._local = threading.local()

    def migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION; refuse a database from a newer caseflow."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: database schema v{version} is newer than this "
                                 f"caseflow understands (v{SCHEMA_VERSION}); upgrade caseflow")
            for v in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[v].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {v + 1}")
            conn.execute("COMMIT")
            return SCHEMA_VERSION
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    class _Tx:
        def __init__(self, conn):
            self.conn = conn

        def __enter__(self):
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, exc, tb):
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
            return False

    def transaction(self):
        return Store._Tx(self._conn())

    # -- cases -----------------------------------------------------------------------
    @staticmethod
    def _case(row) -> CaseRow:
        return CaseRow(*row)

    def create_case(self, name: str, local_path: str, inode: str | None, state: str,
                    now: float, next_attempt_at: float, detail: str | None = None) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO cases (name, local_path, inode, state, next_attempt_at, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, local_path, inode, state, next_attempt_at, now, now))
            case_id = cur.lastrowid
            conn.execute("INSERT INTO history (case_id, src, dst, trigger, at, detail)"
                         " VALUES (?, NULL, ?, 'detect', ?, ?)", (case_id, state, now, detail))
        return case_id

    def get(self, case_id: int) -> CaseRow | None:
        row = self._conn().execute(_CASE_SELECT + " WHERE c.id = ?", (case_id,)).fetchone()
        return self._case(row) if row else None

    def find(self, ref: str) -> list[CaseRow]:
        """Cases whose id or name is `ref` (a name may be shared by several cases)."""
        conn = self._conn()
        rows = conn.execute(_CASE_SELECT + " WHERE c.name = ? ORDER BY c.id", (ref,)).fetchall()
        if ref.isdigit():
            rows += conn.execute(_CASE_SELECT + " WHERE c.id = ?", (int(ref),)).fetchall()
        seen, out = set(), []
        for r in rows:
            if r[0] not in seen:
                seen.add(r[0])
                out.append(self._case(r))
        return out

    def cases(self, states: Iterable[str] | None = None) -> list[CaseRow]:
        conn = self._conn()
        if states is None:
            rows = conn.execute(_CASE_SELECT + " ORDER BY c.id").fetchall()
        else:
            states = list(states)
            marks = ",".join("?" * len(states))
            rows = conn.execute(_CASE_SELECT + f" WHERE c.state IN ({marks}) ORDER BY c.id",
                                states).fetchall()
        return [self._case(r) for r in rows]

    def due_cases(self, now: float, states: Iterable[str], *, unpolled_only: bool = False,
                  group: str | None = None, limit: int | None = None) -> list[CaseRow]:
        """Cases in `states` whose next step is due, highest priority first, then oldest.
        `unpolled_only`: only those with something to do besides a poll (their job has ended
        and its results are still to fetch, or it is being stopped: `reason` is set before
        the case ends); `group`, `limit`: only the first `limit` of that group."""
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
        tail = ""
        if limit is not None:
            tail = " LIMIT ?"
            values.append(limit)
        rows = self._conn().execute(
            _CASE_SELECT + " WHERE " + " AND ".join(where) +
            " ORDER BY c.priority DESC, c.created_at, c.id" + tail, values).fetchall()
        return [self._case(r) for r in rows]

    def due_outside_groups(self, now: float, states: Iterable[str],
                           groups: Iterable[str]) -> list[CaseRow]:
        """Due cases in `states` whose group is none of `groups` (no longer configured)."""
        states, groups = list(states), list(groups)
        if not states:
            return []
        rows = self._conn().execute(
            _CASE_SELECT + f" WHERE c.state IN ({','.join('?' * len(states))})"
            f" AND c.next_attempt_at <= ? AND (c.grp IS NULL OR c.grp NOT IN"
            f" ({','.join('?' * len(groups))})) ORDER BY c.id", (*states, now, *groups)).fetchall()
        return [self._case(r) for r in rows]

    def cases_at(self, local_path: str, states: Iterable[str]) -> list[CaseRow]:
        """The cases in `states` made from the folder at `local_path`."""
        states = list(states)
        rows = self._conn().execute(
            _CASE_SELECT + f" WHERE c.local_path = ? AND c.state IN ({','.join('?' * len(states))})"
            " ORDER BY c.id", (local_path, *states)).fetchall()
        return [self._case(r) for r in rows]

    def next_due(self, states: Iterable[str], after: float | None = None) -> float | None:
        """The earliest next_attempt_at among cases in `states` (later than `after`)."""
        states = list(states)
        if not states:
            return None
        marks = ",".join("?" * len(states))
        return self._conn().execute(
            f"SELECT MIN(next_attempt_at) FROM cases WHERE state IN ({marks})"
            " AND next_attempt_at > ?", (*states, float("-inf") if after is None else after)
        ).fetchone()[0]

    def folders(self) -> list[tuple[str, str | None, str]]:
        """(local_path, inode, state) of every case, oldest first, for telling new folders
        from known ones."""
        return self._conn().execute("SELECT local_path, inode, state FROM cases"
                                    " ORDER BY id").fetchall()

    def commit_transition(self, case_id: int, src: str, dst: str, trigger: str, now: float,
                          changes: dict | None = None, take_slot: int | None = None,
                          release_slot: bool = False, detail: str | None = None) -> None:
        """Apply one transition with its bookkeeping, atomically.

        Raises StaleCase (and changes nothing) when the case is no longer in `src`
        or the slot to take is no longer free.
        """
        changes = dict(changes or {})
        bad = set(changes) - CHANGEABLE
        if bad:
            raise ValueError(f"not changeable by a transition: {sorted(bad)}")
        changes.setdefault("attempts", 0)
        sets = ["state = ?", "updated_at = ?", "next_attempt_at = ?", "failing_since = NULL",
                "progress_bytes = NULL", "progress_total = NULL", "queue_status = NULL"]
        values: list = [dst, now, now]
        if "last_error" not in changes:
            sets.append("last_error = NULL")
        for k, v in changes.items():
            sets.append(f"{k} = ?")
            values.append(v)
        with self.transaction() as conn:
            cur = conn.execute(f"UPDATE cases SET {', '.join(sets)} WHERE id = ? AND state = ?",
                               (*values, case_id, src))
            if cur.rowcount != 1:
                raise StaleCase(f"case {case_id} is no longer {src}")
            if take_slot is not None:
                cur = conn.execute("UPDATE slots SET case_id = ? WHERE id = ? AND case_id IS NULL"
                                   " AND retired = 0", (case_id, take_slot))
                if cur.rowcount != 1:
                    raise StaleCase(f"slot {take_slot} was taken meanwhile")
            if release_slot:
                self._release(conn, case_id)
            conn.execute("INSERT INTO history (case_id, src, dst, trigger, at, detail)"
                         " VALUES (?, ?, ?, ?, ?, ?)", (case_id, src, dst, trigger, now, detail))

    def release_slot(self, case_id: int) -> None:
        """Free the slot an ended case kept for a job that may have run on (see Case)."""
        with self.transaction() as conn:
            self._release(conn, case_id)

    @staticmethod
    def _release(conn, case_id: int) -> list[int]:
        ids = [r[0] for r in conn.execute("SELECT id FROM slots WHERE case_id = ?", (case_id,))]
        conn.execute("UPDATE slots SET case_id = NULL WHERE case_id = ?", (case_id,))
        conn.execute("DELETE FROM slots WHERE case_id IS NULL AND retired = 1")
        return ids

    def note_failure(self, case_id: int, state: str, attempts: int, failing_since: float,
                     error: str, next_attempt_at: float, now: float) -> None:
        """The case's failure streak grew (see caseflow.retry): keep it and the next try."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cases SET attempts = ?, failing_since = ?, last_error = ?,"
                " next_attempt_at = ?, updated_at = ? WHERE id = ? AND state = ?",
                (attempts, failing_since, error, next_attempt_at, now, case_id, state))

    def reset_streak(self, case_id: int, state: str) -> None:
        """Something worked for the case (a good poll): its failure streak is over."""
        with self.transaction() as conn:
            conn.execute("UPDATE cases SET attempts = 0, failing_since = NULL, last_error = NULL"
                         " WHERE id = ? AND state = ?", (case_id, state))

    def set_stopping(self, case_id: int, state: str, reason: str, now: float) -> bool:
        """The case is to fail with `reason` once its job is stopped (or seen to end); it
        keeps its state and slot until then, and shows the reason meanwhile."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE cases SET reason = ?, next_attempt_at = ?, updated_at = ?"
                               " WHERE id = ? AND state = ? AND reason IS NULL",
                               (reason, now, now, case_id, state))
            return cur.rowcount == 1

    def reschedule(self, case_id: int, state: str, next_attempt_at: float) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE cases SET next_attempt_at = ? WHERE id = ? AND state = ?",
                         (next_attempt_at, case_id, state))

    def record_job_end(self, case_id: int, state: str, outcome: str, detail: str,
                       exit_code: int | None, now: float) -> None:
        """The queue said the job ended: keep how, and make the case due for its results."""
        with self.transaction() as conn:
            conn.execute("UPDATE cases SET job_outcome = ?, job_detail = ?, exit_code = ?,"
                         " queue_status = NULL, next_attempt_at = ?, updated_at = ?"
                         " WHERE id = ? AND state = ?",
                         (outcome, detail, exit_code, now, now, case_id, state))

    def set_results_path(self, case_id: int, state: str, path: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE cases SET results_path = ? WHERE id = ? AND state = ?",
                         (path, case_id, state))

    def results_paths(self) -> set[str]:
        return {r[0] for r in self._conn().execute(
            "SELECT results_path FROM cases WHERE results_path IS NOT NULL")}

    def wrapups_due(self, now: float) -> list[CaseRow]:
        """Terminal cases whose wrap-up (clean-up, archiving, hook) is still to do."""
        rows = self._conn().execute(_CASE_SELECT + " WHERE c.wrapup = 1 AND c.next_attempt_at <= ?"
                                    " ORDER BY +c.id", (now,)).fetchall()  # + : the index serves
        return [self._case(r) for r in rows]

    def next_wrapup(self, after: float) -> float | None:
        return self._conn().execute("SELECT MIN(next_attempt_at) FROM cases WHERE wrapup = 1"
                                    " AND next_attempt_at > ?", (after,)).fetchone()[0]

    def wrapup_progress(self, case_id: int, state: str, *, local_path: str | None = None,
                        note: str | None = None, done: bool = False,
                        retry_at: float | None = None) -> None:
        """Record a wrap-up step: the case folder's new place, a note, done or retry later."""
        sets, values = [], []
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
            conn.execute(f"UPDATE cases SET {', '.join(sets)} WHERE id = ? AND state = ?"
                         " AND wrapup = 1", (*values, case_id, state))

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
                (now, now, *states, host, host))
            return cur.rowcount

    def set_queue_status(self, case_id: int, state: str, text: str | None) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE cases SET queue_status = ? WHERE id = ? AND state = ?",
                         (text, case_id, state))

    def instance_id(self) -> str:
        """A random id of this database, made once; it keeps job labels of two caseflow
        installations that share a queue apart."""
        import secrets
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
            if row:
                return row[0]
            value = secrets.token_hex(4)
            conn.execute("INSERT INTO meta (key, value) VALUES ('instance', ?)", (value,))
            return value

    def set_progress(self, case_id: int, sent: int, total: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE cases SET progress_bytes = ?, progress_total = ? WHERE id = ?",
                         (sent, total, case_id))

    # -- hosts -------------------------------------------------------------------------
    def set_host_problem(self, name: str, problem: str | None, now: float) -> None:
        with self.transaction() as conn:
            if problem is None:
                conn.execute("UPDATE hosts SET problem = NULL, since = NULL WHERE name = ?",
                             (name,))
            else:
                conn.execute("INSERT INTO hosts (name, problem, since, updated) VALUES (?, ?, ?, ?)"
                             " ON CONFLICT (name) DO UPDATE SET problem = excluded.problem,"
                             " updated = excluded.updated", (name, problem, now, now))

    def set_host_notice(self, name: str, notice: str | None, now: float) -> None:
        """Something about the host a person should know that does not stop caseflow's work
        (e.g. a paused pueue group)."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO hosts (name, notice, updated) VALUES (?, ?, ?)"
                         " ON CONFLICT (name) DO UPDATE SET notice = excluded.notice,"
                         " updated = excluded.updated", (name, notice, now))

    def host_notices(self) -> list[tuple[str, str]]:
        return self._conn().execute("SELECT name, notice FROM hosts WHERE notice IS NOT NULL"
                                    " ORDER BY name").fetchall()

    def host_problems(self) -> list[tuple[str, str, float]]:
        return self._conn().execute("SELECT name, problem, since FROM hosts WHERE problem IS NOT"
                                    " NULL ORDER BY name").fetchall()

    def set_request(self, case_id: int, request: str | None) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE cases SET request = ? WHERE id = ?", (request, case_id))

    def requested(self) -> list[CaseRow]:
        rows = self._conn().execute(_CASE_SELECT + " WHERE c.request IS NOT NULL"
                                    " ORDER BY +c.id")  # + : the partial index serves
        return [self._case(r) for r in rows.fetchall()]

    def history(self, case_id: int) -> list[HistoryRow]:
        rows = self._conn().execute("SELECT id, case_id, src, dst, trigger, at, detail FROM history"
                                    " WHERE case_id = ? ORDER BY id", (case_id,)).fetchall()
        return [HistoryRow(*r) for r in rows]

    # -- slots -----------------------------------------------------------------------
    def sync_slots(self, hosts) -> list[str]:
        """Make the slot table match the configured hosts and their groups; idempotent.

        New slots appear; slots of removed hosts or groups (or beyond a lowered count)
        are retired: deleted when free, kept until released when a case holds them.
        Returns a line per change, for the log.
        """
        changes = []
        with self.transaction() as conn:
            # slots from before there were several hosts: the first host serving the group
            for grp, in conn.execute("SELECT DISTINCT grp FROM slots WHERE host = ''").fetchall():
                owner = next((h.name for h in hosts if h.group(grp) is not None), None)
                if owner is not None:
                    conn.execute("UPDATE slots SET host = ? WHERE host = '' AND grp = ?",
                                 (owner, grp))
            wanted = {}
            for h in hosts:
                for g in h.groups:
                    for i in range(g.slots):
                        wanted[(h.name, g.name, i)] = g.device_of(i)
            existing = {(r[1], r[2], r[3]): r for r in conn.execute(
                "SELECT id, host, grp, idx, device, case_id, retired FROM slots")}
            for key, device in wanted.items():
                row = existing.get(key)
                if row is None:
                    conn.execute("INSERT INTO slots (host, grp, idx, device) VALUES (?, ?, ?, ?)",
                                 (*key, device))
                    changes.append(f"slot {_slot_name(*key)} added")
                elif row[4] != device or row[6]:
                    conn.execute("UPDATE slots SET device = ?, retired = 0 WHERE id = ?",
                                 (device, row[0]))
                    changes.append(f"slot {_slot_name(*key)} updated")
            for key, row in existing.items():
                if key in wanted:
                    continue
                if row[5] is None:
                    conn.execute("DELETE FROM slots WHERE id = ?", (row[0],))
                    changes.append(f"slot {_slot_name(*key)} removed")
                elif not row[6]:
                    conn.execute("UPDATE slots SET retired = 1 WHERE id = ?", (row[0],))
                    changes.append(f"slot {_slot_name(*key)} retired; case {row[5]} still "
                                   "holds it")
        return changes

    def free_slot_counts(self) -> dict[str, dict[str, int]]:
        """{group: {host: free slots}}, for telling at once whether a queued case can move."""
        out: dict[str, dict[str, int]] = {}
        for grp, host, n in self._conn().execute(
                "SELECT grp, host, COUNT(*) FROM slots WHERE case_id IS NULL AND retired = 0"
                " GROUP BY grp, host"):
            out.setdefault(grp, {})[host] = n
        return out

    def free_slot(self, group: str, hosts: Sequence[str] | None = None) -> SlotRow | None:
        """A free slot of the group, on one of `hosts` (all when None): on the host with
        the most free slots of the group (spreading the load), the earlier host on a tie."""
        rows = self._conn().execute(
            "SELECT id, grp, idx, device, case_id, retired, host FROM slots WHERE grp = ?"
            " AND case_id IS NULL AND retired = 0 ORDER BY idx", (group,)).fetchall()
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
        rows = self._conn().execute(
            "SELECT s.id, s.grp, s.idx, s.device, s.case_id, s.retired, c.name, c.state, s.host"
            " FROM slots s LEFT JOIN cases c ON c.id = s.case_id ORDER BY s.host, s.grp, s.idx")
        return [SlotRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8]) for r in rows]

    def reconcile_slots(self, holding_states: Iterable[str]) -> list[tuple]:
        """Free slots held by missing cases or by cases in a state that holds none
        (terminal ones above all), except those an ended case keeps for a job that may
        still run (its wrap-up stops the job first); returns (slot id, group, index, case
        id, state) per freed slot, for the log."""
        holding = list(holding_states)
        marks = ",".join("?" * len(holding))
        freed = []
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT s.id, s.grp, s.idx, s.case_id, c.state FROM slots s LEFT JOIN cases c"
                f" ON c.id = s.case_id WHERE s.case_id IS NOT NULL AND (c.id IS NULL OR (c.state"
                f" NOT IN ({marks}) AND NOT (c.wrapup = 1 AND c.task_id IS NOT NULL AND"
                " c.job_outcome IS NULL)))", holding).fetchall()
            for slot_id, grp, idx, case_id, state in rows:
                conn.execute("UPDATE slots SET case_id = NULL WHERE id = ?", (slot_id,))
                freed.append((slot_id, grp, idx, case_id, state or "missing"))
            conn.execute("DELETE FROM slots WHERE case_id IS NULL AND retired = 1")
        return freed
