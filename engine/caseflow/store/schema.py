"""The database file: its tables and their migrations, connections and transactions, and the
rows read from it (the store's queries are in store.cases and store.slots).

WAL mode, one connection per thread (closed when its thread ends: an upload's
short-lived range threads report progress here, and 200 large-file uploads once left 306
connections and 619 open fds behind), schema versioned with `PRAGMA user_version`
and forward migrations.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import weakref
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import StoreError

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
    # v7: stopping a job before its case ends: since when and which signal was sent (0 none
    # yet, 1 TERM, 2 KILL); the case folder's ctime when the case took it (folder_stamp: a
    # folder replaced with a reused inode is told apart by it)
    """
    ALTER TABLE cases ADD COLUMN stop_since REAL;
    ALTER TABLE cases ADD COLUMN stop_sent INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE cases ADD COLUMN folder_stamp TEXT;
    CREATE INDEX cases_path ON cases (local_path);
    """,
    # v8: a host an operator drained (`caseflow host pause`): no new upload or submit there
    # until `caseflow host resume`; why, and since when
    """
    ALTER TABLE hosts ADD COLUMN drain TEXT;
    ALTER TABLE hosts ADD COLUMN drain_since REAL;
    """,
    # v9: what kind of problem a host has (errors.HOST_PROBLEM_KINDS): the problem column
    # now also holds an unreachable host's and a nearly full disk's, which do not pause it
    """
    ALTER TABLE hosts ADD COLUMN kind TEXT;
    UPDATE hosts SET kind = 'config' WHERE problem IS NOT NULL;
    """,
    # v10: when the current run's job started and ended on its host, and who said so
    # (job_times_source: "queue" when the queue or the job's wrapper reported every time kept,
    # "observed" when a poll saw it; caseflow.durations). Each history row carries them as
    # they were when it was written, so that every run's job keeps its times after a retry.
    # Cases from before know nothing of their job's times ("unknown"): no poll now takes a
    # job that started long ago for one starting now.
    """
    ALTER TABLE cases ADD COLUMN job_started REAL;
    ALTER TABLE cases ADD COLUMN job_ended REAL;
    ALTER TABLE cases ADD COLUMN job_times_source TEXT;
    UPDATE cases SET job_times_source = 'unknown';
    ALTER TABLE history ADD COLUMN job_started REAL;
    ALTER TABLE history ADD COLUMN job_ended REAL;
    ALTER TABLE history ADD COLUMN job_times_source TEXT;
    UPDATE history SET job_times_source = 'unknown';
    """,
    # v11: how many times the case's job was taken away by the infrastructure (a node failed,
    # a preemption, a reboot) and the case ran again by itself (retry.infrastructure_reruns)
    """
    ALTER TABLE cases ADD COLUMN reruns INTEGER NOT NULL DEFAULT 0;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# columns a transition may change besides the state
CHANGEABLE = {
    "grp",
    "host",
    "remote_path",
    "task_id",
    "reason",
    "last_error",
    "file_count",
    "size_bytes",
    "request",
    "attempts",
    "run",
    "priority",
    "job_outcome",
    "job_detail",
    "exit_code",
    "results_path",
    "results_fetched",
    "wrapup",
    "wrapup_note",
    "stop_since",
    "stop_sent",
    "folder_stamp",
    "job_started",
    "job_ended",
    "job_times_source",
    "reruns",
}


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
    stop_since: float | None
    stop_sent: int
    folder_stamp: str | None
    job_started: float | None
    job_ended: float | None
    job_times_source: str | None
    reruns: int
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
    # the case's job times when the row was written (its run's, on the row that ended it)
    job_started: float | None = None
    job_ended: float | None = None
    job_times_source: str | None = None


@dataclass(frozen=True)
class JobTimes:
    """When a case's job started and ended on its host (Unix time, None: not known), and
    `source`: "queue" (the queue or the job's wrapper said every time here), "observed" (a
    poll saw one), "unknown" (the case is older than caseflow's keeping of job times)."""

    started: float | None = None
    ended: float | None = None
    source: str | None = None


HISTORY_SELECT = (
    "SELECT id, case_id, src, dst, trigger, at, detail, job_started, job_ended,"
    " job_times_source"
    " FROM history"
)
CASE_COLUMNS = [f.name for f in fields(CaseRow)][:-4]
CASE_SELECT = (
    "SELECT "
    + ", ".join(f"c.{c}" for c in CASE_COLUMNS)
    + ", s.id, s.idx, s.device, s.host FROM cases c LEFT JOIN slots s"
    " ON s.case_id = c.id"
)


# Connections of the parent seen in a forked child (kept, never touched there: see below)
_FORKED: list[sqlite3.Connection] = []


class _ThreadConnection:
    """One thread's connection. Only that thread's thread-local slot holds it, so it is
    closed when the thread ends (CPython drops a thread's thread-local values then).

    In a child forked from this process (a test's pexpect.spawn, a hook's fork before its
    exec) the other threads' thread-locals are dropped too: closing their connections there
    took SQLite's memory mutex, which another thread of the parent held at the fork, and the
    child hung before its exec (gdb: sqlite3_free <- sqlite3_finalize <- this close). SQLite
    must not use a connection across a fork: the child keeps it untouched instead."""

    __slots__ = ("conn", "pid", "__weakref__")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.pid = os.getpid()

    def close(self) -> None:
        if os.getpid() != self.pid:
            _FORKED.append(self.conn)
            return
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    __del__ = close


class Database:
    """One SQLite file, shared by the threads of a process."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._local = threading.local()
        self._open: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection to the database (opened at its first use)."""
        held = getattr(self._local, "held", None)
        if held is None:
            conn = sqlite3.connect(
                str(self.path), timeout=60, isolation_level=None, check_same_thread=False
            )
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
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: database schema v{version} is newer than this "
                    f"caseflow understands (v{SCHEMA_VERSION}); upgrade caseflow"
                )
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
        return Database._Tx(self.connection())

    def instance_id(self) -> str:
        """A random id of this database, made once; it keeps job labels of two caseflow
        installations that share a queue apart."""
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
            if row:
                return row[0]
            value = secrets.token_hex(4)
            conn.execute("INSERT INTO meta (key, value) VALUES ('instance', ?)", (value,))
            return value
