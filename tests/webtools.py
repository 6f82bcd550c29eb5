"""Helpers of the status page's tests: plain HTTP requests, a store filled with many cases."""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit

from caseflow.store import Store

WEB = {"listen": "127.0.0.1:0"}  # any free port; the daemon's `web.port` says which


def request(url: str, path: str = "/", method: str = "GET", headers: dict | None = None,
            body: bytes | None = None, timeout: float = 30) -> tuple[int, dict, bytes]:
    """One request with the path sent exactly as given (no normalisation of `..`)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get_json(url: str, path: str, headers: dict | None = None):
    status, _, body = request(url, path, headers=headers)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


def fill_cases(database: Path, count: int, state: str = "success", group: str = "gpu_a",
               name: str = "bulk-{i:05d}", reason: str | None = None) -> None:
    """`count` ended cases written straight into a real store, in one transaction (a daemon
    would need hours to make 10,000), each with the history of a case that flowed."""
    store = Store(database)
    store.migrate()
    store.close()
    now = time.time()
    conn = sqlite3.connect(database)
    try:
        with conn:
            first = conn.execute("SELECT COALESCE(MAX(id), 0) FROM cases").fetchone()[0] + 1
            conn.executemany(
                "INSERT INTO cases (id, name, local_path, state, grp, host, next_attempt_at,"
                " created_at, updated_at, reason, file_count, size_bytes)"
                " VALUES (?, ?, ?, ?, ?, 'local', ?, ?, ?, ?, 2, 1006)",
                [(first + i, name.format(i=i), f"/nonexistent/{i}", state, group, now,
                  now - 3600 + i * 0.1, now - 60 + i * 0.001, reason) for i in range(count)])
            moves = [(None, "detected", "detect"), ("detected", "stable", "stabilize"),
                     ("stable", "queued", "enqueue"), ("queued", "gpu_locked", "lock_gpu"),
                     ("gpu_locked", "uploaded", "upload"), ("uploaded", "running", "submit"),
                     ("running", state, "complete" if state == "success" else "fail")]
            conn.executemany(
                "INSERT INTO history (case_id, src, dst, trigger, at, detail) VALUES"
                " (?, ?, ?, ?, ?, ?)",
                [(first + i, src, dst, trigger, now - 3600 + i * 0.1 + k, None)
                 for i in range(count) for k, (src, dst, trigger) in enumerate(moves)])
    finally:
        conn.close()


def add_case(database: Path, name: str, state: str, created: float, updated: float,
             moves: tuple = (), **columns) -> int:
    """One case written straight into a real store (group gpu_a on host local unless
    `columns` say otherwise), with its history: `moves` as (from, to, trigger, at)."""
    values = {"name": name, "local_path": f"/nonexistent/{name}", "state": state, "grp": "gpu_a",
              "host": "local", "next_attempt_at": updated, "created_at": created,
              "updated_at": updated, **columns}
    conn = sqlite3.connect(database)
    try:
        with conn:
            case_id = conn.execute(
                f"INSERT INTO cases ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                list(values.values())).lastrowid
            conn.executemany("INSERT INTO history (case_id, src, dst, trigger, at) VALUES"
                             " (?, ?, ?, ?, ?)", [(case_id, *m) for m in moves])
    finally:
        conn.close()
    assert case_id is not None
    return case_id


# 2025-07-04T16:05:09Z: when the case "july" of the scene below was detected
JULY = 1751645109.0
UNREACHABLE_TEXT = ("cannot connect to local: connection refused; caseflow tries again every "
                    "30 s (check that the host is up and sshd listens)")


def needs_a_person(ws, now: float) -> dict[str, int]:
    """A day that needs a person, written into the workspace's store (for a status page
    without a daemon, which would move the cases): host local unreachable for 25 minutes;
    40 cases that succeeded and one in July 2025; in the last 24 h 3 failed, 1 not found and
    1 cancelled (not counted), 2 failed days ago; 2 retrying after errors; 1 holding a slot of
    the unreachable host; 3 running; 1 being copied; 18 queued and 2 queued for 5 hours.
    Case name -> id."""
    store = ws.store
    store.migrate()
    store.sync_slots(ws.config().hosts)
    fill_cases(ws.database, 40, name="done-{i:02d}")
    ids = {}

    def add(name, state, created, updated, last=None, **columns):
        moves = (("running", state, last, updated),) if last else ()
        ids[name] = add_case(ws.database, name, state, created, updated, moves, **columns)
    add("july", "success", JULY, JULY + 3600, "complete")
    for i in range(2):
        add(f"old-fail-{i}", "failure", now - 4 * 86400, now - 3 * 86400, "fail",
            reason="job exited with code 1")
    for i in range(3):
        add(f"broken-{i}", "failure", now - 3600, now - 600 + i, "fail",
            reason="job exited with code 2")
    add("lost-0", "not_found", now - 3600, now - 500, "lose",
        reason="the queue no longer knows the job")
    add("stopped-by-me", "failure", now - 3600, now - 60, "cancel", reason="cancelled")
    for i in range(2):
        add(f"slow-{i}", "queued", now - 6 * 3600, now - 5 * 3600)
    for i in range(2):
        add(f"flaky-{i}", "stable", now - 1800, now - 120, host=None, attempts=3,
            failing_since=now - 900, next_attempt_at=now + 3600,
            last_error="case.yaml: cannot read it: Permission denied")
    add("upload-wait", "gpu_locked", now - 1700, now - 1600)
    for i in range(3):
        add(f"sim-{i}", "running", now - 1500, now - 1200, task_id=str(i))
    add("copying", "detected", now - 30, now - 30, grp=None, host=None)
    for i in range(18):
        add(f"queued-{i:02d}", "queued", now - 900 + i, now - 900 + i, host=None)
    store.set_host_problem("local", UNREACHABLE_TEXT, now - 1500, kind="unreachable")
    return ids
