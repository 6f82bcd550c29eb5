"""What a case, a slot and a host look like to a person or a program: the dicts behind
`caseflow status --json`, `show --json` and `resources --json`, which the status page's
JSON endpoints serve unchanged (one definition, so the two never drift apart).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from .case_model import job_log_path
from .store import CaseRow, HistoryRow, SlotRow

LOG_TAIL_LINES = 10
_TAIL_BYTES = 64 * 1024  # enough for the last lines; a job log may be gigabytes


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def printable(text: str | None) -> str:
    """A name as it can be shown on one terminal line (control characters escaped)."""
    if text is None:
        return "-"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def case_json(row: CaseRow) -> dict:
    """One case as `caseflow status --json` lists it."""
    return {"id": row.id, "name": row.name, "state": row.state, "group": row.grp,
            "slot": row.slot_index, "device": row.slot_device, "task_id": row.task_id,
            "host": row.slot_host or row.host, "remote_path": row.remote_path, "local_path": row.local_path,
            "reason": row.reason, "last_error": row.last_error, "attempts": row.attempts,
            "failing_since": iso(row.failing_since),
            "run": row.run, "priority": row.priority, "request": row.request,
            "file_count": row.file_count,
            "progress_bytes": row.progress_bytes, "progress_total": row.progress_total,
            "queue_status": row.queue_status,
            "exit_code": row.exit_code,
            "job_outcome": row.job_outcome,
            "results": row.results_path if row.results_fetched else None,
            "wrapup": "pending" if row.wrapup else None,
            "wrapup_note": row.wrapup_note,
            "size_bytes": row.size_bytes, "next_attempt_at": iso(row.next_attempt_at),
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}


def upload_progress(row: CaseRow, now: float) -> dict | None:
    """Bytes sent of the case's upload in flight, the average rate since its slot was taken
    (or since its last failed attempt: both set updated_at) and the time left at that rate."""
    if not row.progress_total or row.state not in ("gpu_locked",):
        return None
    sent = row.progress_bytes or 0
    elapsed = now - row.updated_at
    rate = sent / elapsed if elapsed > 0 and sent else None
    left = (row.progress_total - sent) / rate if rate else None
    return {"bytes": sent, "total": row.progress_total,
            "percent": round(100 * sent / row.progress_total, 1),
            "rate_bytes_per_second": round(rate) if rate else None,
            "seconds_left": round(left, 1) if left is not None else None}


def history_json(history: list[HistoryRow]) -> list[dict]:
    return [{"from": h.src, "to": h.dst, "trigger": h.trigger, "at": iso(h.at),
             "detail": h.detail} for h in history]


def case_detail(database: Path, row: CaseRow, history: list[HistoryRow],
                now: float) -> dict:
    """One case as `caseflow show --json` prints it: the status fields, where its job log
    is, its upload in flight and its whole transition history."""
    out = case_json(row)
    log_file = job_log_path(database, row)
    out["job_log"] = str(log_file) if log_file.exists() else None
    out["upload"] = upload_progress(row, now)
    out["history"] = history_json(history)
    return out


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> tuple[list[str], int | None]:
    """The last `lines` lines of a job log and its size in bytes (([], None) when absent),
    reading at most the last 64 KiB."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - _TAIL_BYTES))
            data = f.read(_TAIL_BYTES)
    except OSError:
        return [], None
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > _TAIL_BYTES and text:
        text = text[1:]  # the first line read is probably cut
    return text[-lines:], size


def slot_json(s: SlotRow) -> dict:
    """One slot as `caseflow resources --json` lists it."""
    return {"host": s.host, "group": s.grp, "slot": s.idx, "device": s.device,
            "case_id": s.case_id, "case_name": s.case_name, "case_state": s.case_state,
            "retired": s.retired}
