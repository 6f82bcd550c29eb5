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
