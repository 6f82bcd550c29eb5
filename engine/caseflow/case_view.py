"""How a case looks to an operator: the JSON of `status --json` and `show --json`, the
one-line cells of the status table, upload progress as bytes, rate and time left.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from .store import CaseRow

REASON_WIDTH = 120  # characters of a reason in the status table (`show` has all of it)


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


def one_line(text: str | None, width: int = REASON_WIDTH) -> str:
    """A message of several lines (PyYAML's, a remote command's stderr) as one line: runs
    of white space become one space, and a long one is cut, saying so."""
    if text is None:
        return "-"
    flat = printable(re.sub(r"\s+", " ", text).strip())
    return flat if len(flat) <= width else flat[:width - 1].rstrip() + "…"


def case_json(row: CaseRow, terminal: bool) -> dict:
    """The keys of `status --json`, documented in docs/cli.md (a test holds them to it).
    `terminal`: the case has ended, so no next attempt is due."""
    return {"id": row.id, "name": row.name, "state": row.state, "group": row.grp,
            "slot": row.slot_index, "device": row.slot_device, "task_id": row.task_id,
            "host": row.slot_host or row.host, "remote_path": row.remote_path,
            "local_path": row.local_path,
            "reason": row.reason, "last_error": row.last_error, "attempts": row.attempts,
            "failing_since": iso(row.failing_since),
            "run": row.run, "priority": row.priority, "request": row.request,
            "file_count": row.file_count, "size_bytes": row.size_bytes,
            "progress_bytes": row.progress_bytes, "progress_total": row.progress_total,
            "queue_status": row.queue_status,
            "exit_code": row.exit_code,
            "job_outcome": row.job_outcome,
            "results": row.results_path if row.results_fetched else None,
            "wrapup": "pending" if row.wrapup else None,
            "wrapup_note": row.wrapup_note,
            "next_attempt_at": None if terminal else iso(row.next_attempt_at),
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # not reached


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def upload_progress(row: CaseRow, now: float) -> str | None:
    """"1.2 GB of 1.5 GB (80%), 410.3 MB/s, 1 s left" while the case uploads, else None.

    The attempt began at the later of the case's last change (the slot was taken, or the
    last attempt failed) and its next attempt's time: the upload is dispatched at once
    then. Progress is stored at most once a second, so the rate may read up to a second
    of sending low.
    """
    if not row.progress_total or row.progress_bytes is None:
        return None
    sent, total = row.progress_bytes, row.progress_total
    text = f"{size(sent)} of {size(total)} ({100 * sent // total}%)"
    elapsed = now - max(row.updated_at, row.next_attempt_at)
    if sent and elapsed > 0:
        rate = sent / elapsed
        text += f", {size(rate)}/s"
        if sent < total:
            text += f", {duration((total - sent) / rate)} left"
    return text


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def state_cell(row: CaseRow, now: float) -> str:
    """The STATE column: the state and what it is doing inside it."""
    text = row.state
    progress = upload_progress(row, now)
    if progress:
        text += f" ({progress})"
    if row.queue_status and row.queue_status != "running":
        text += f" ({row.queue_status})"
    if row.job_outcome and row.state == "running":
        text += f" (job ended: {row.job_outcome}; fetching results)"
    if row.request:
        text += f" ({row.request} requested)"
    return one_line(text, width=10_000)


def reason_cell(row: CaseRow) -> str:
    if row.reason:
        return one_line(row.reason)
    if row.last_error:
        return one_line(f"retrying since {iso(row.failing_since)} ({row.attempts} attempts): "
                        f"{row.last_error}")
    return "-"
