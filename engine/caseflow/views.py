"""What a case, a slot and a host look like to a person or a program: the dicts behind
`caseflow status --json`, `show --json` and `resources --json`, which the status page's
JSON endpoints serve unchanged (one definition, so the two never drift apart), and the
one-line cells of the status table.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import overload

from . import durations
from .backends import LOST, RUNNING
from .core.case_model import job_log_path
from .errors import AUTH, DISK_LOW, HOST_KEY, LOGIN, QUEUE_DOWN, UNREACHABLE
from .job_output import clean
from .spec import JOB_END_ROLES, load_spec
from .store import CaseRow, HistoryRow, SlotRow
from .store.reader import HostRow
from .text import plural

LOG_TAIL_LINES = 10
WAIT_WIDTH = 100  # characters of why a host makes its cases wait, in a case's state text
REASON_WIDTH = 120  # characters of a reason in the status table (`show` has all of it)
_TAIL_BYTES = 64 * 1024  # enough for the last lines; a job log may be gigabytes


@overload
def iso(t: float) -> str: ...
@overload
def iso(t: float | None) -> str | None: ...


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return (
        datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


# how `status`, `status --watch` and the page begin a host's problem line, by its kind
_PROBLEM_HEADS = {
    UNREACHABLE: "UNREACHABLE",
    DISK_LOW: "LOW ON DISK",
    HOST_KEY: "work PAUSED (host key)",
    AUTH: "work PAUSED (authentication)",
    LOGIN: "work PAUSED (needs login)",
    QUEUE_DOWN: "work PAUSED (queue daemon down)",
}


class Stamp(str):
    """A time (ISO 8601, UTC) in a text made of parts: the command line and the JSON show
    the parts joined (the ISO as it is), the status page shows the time as a <time> in the
    reader's zone (web.pages.parts_html)."""


def _stamp(t: float | None) -> str:
    return "unknown" if t is None else Stamp(iso(t))


def problem_head(kind: str) -> str:
    """How a host's problem line begins: "UNREACHABLE", "work PAUSED (host key)"..."""
    return _PROBLEM_HEADS.get(kind, "work PAUSED")


def host_problem_parts(kind: str, problem: str, since: float | None) -> list[str]:
    """A host's problem as `status`, `status --watch` and the page say it: what, since
    when, and the problem's own text (which says what to do)."""
    return [f"{problem_head(kind)} since ", _stamp(since), f": {one_line(problem, 10_000)}"]


def host_problem_text(kind: str, problem: str, since: float | None) -> str:
    return "".join(host_problem_parts(kind, problem, since))


def host_lines(hosts: Iterable[HostRow]) -> list[str]:
    """One line per thing a person should know about each host: its problem, a notice
    (a paused pueue group), a drain."""
    lines = []
    for h in hosts:
        name = printable(h.name)
        if h.problem:
            lines.append(f"host {name}: {host_problem_text(h.kind, h.problem, h.since)}")
        if h.notice:
            lines.append(f"host {name}: {one_line(h.notice, 10_000)}")
        if h.drain:
            lines.append(f"host {name}: {drain_text(h.drain, h.drain_since, h.name)}")
    return lines


def host_waits(
    hosts: Iterable[HostRow], groups: Mapping[str, Iterable[str]] | None = None
) -> dict[str, str]:
    """Why the cases of each host that cannot take work now wait (host name -> why): its
    problem, or its drain. A nearly full disk does not stop work and is left out. With
    `groups` (group -> the hosts serving it), also "group G" -> why, for a group none of
    whose hosts takes work -> "host H: why; ..." (its queued cases wait for them; a host
    name has no space)."""
    waits = {}
    for h in hosts:
        if h.problem and h.kind != DISK_LOW:
            waits[h.name] = one_line(h.problem, WAIT_WIDTH)
        elif h.drain:
            waits[h.name] = one_line(f"drained ({h.drain})", WAIT_WIDTH)
    for group, names in (groups or {}).items():
        names = list(names)
        if names and all(n in waits for n in names):
            waits[f"group {group}"] = "; ".join(f"host {printable(n)}: {waits[n]}" for n in names)
    return waits


def group_hosts(config) -> dict[str, list[str]]:
    """Group -> the configured hosts serving it (for host_waits)."""
    return {g.name: [h.name for h in config.hosts if h.group(g.name)] for g in config.groups}


def drain_parts(reason: str, since: float | None, host: str) -> list[str]:
    """A drained host as `status`, `status --watch` and the page say it."""
    return [
        "DRAINED since ",
        _stamp(since),
        f" ({one_line(reason, 1000)}): no new upload or submit, running jobs go on; "
        f"`caseflow host resume {host}` ends it",
    ]


def drain_text(reason: str, since: float | None, host: str) -> str:
    return "".join(drain_parts(reason, since, host))


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
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


_terminal: frozenset[str] | None = None
_host_work: frozenset[str] | None = None
_slot_taking: frozenset[str] | None = None


def _is_terminal(state: str) -> bool:
    global _terminal
    if _terminal is None:
        _terminal = frozenset(load_spec().terminal_states)
    return state in _terminal


def _is_host_work(state: str) -> bool:
    """The case holds a slot and its next step is work on the host (an upload, a submit)."""
    global _host_work
    if _host_work is None:
        spec = load_spec()
        _host_work = frozenset(set(spec.slot_states) - set(spec.poll_states))
    return state in _host_work


def _takes_slot(state: str) -> bool:
    global _slot_taking
    if _slot_taking is None:
        _slot_taking = frozenset(load_spec().slot_taking_states)
    return state in _slot_taking


def case_json(
    row: CaseRow,
    terminal: bool | None = None,
    now: float | None = None,
    history: list[HistoryRow] | None = None,
    waits: Mapping[str, str] | None = None,
) -> dict:
    """One case as `caseflow status --json` lists it: the keys documented in docs/cli.md (a
    test holds them to it). `terminal`: the case has ended, so no next attempt is due (by
    default, whether its state is a final one of the spec). `now`: for the upload's rate in
    `state_text` and the durations of a run still going (default: the clock's). `history`:
    the case's, for its durations (without it they are all null); `waits`: why the hosts that
    cannot take work now make their cases wait (`host_waits`)."""
    if terminal is None:
        terminal = _is_terminal(row.state)
    now = time.time() if now is None else now
    return {
        "id": row.id,
        "name": row.name,
        "state": row.state,
        "state_text": state_cell(row, now, waits),
        "group": row.grp,
        "slot": row.slot_index,
        "device": row.slot_device,
        "task_id": row.task_id,
        "host": row.slot_host or row.host,
        "remote_path": row.remote_path,
        "local_path": row.local_path,
        "reason": row.reason,
        "last_error": row.last_error,
        "attempts": row.attempts,
        "failing_since": iso(row.failing_since),
        "run": row.run,
        "reruns": row.reruns,
        "priority": row.priority,
        "request": row.request,
        "file_count": row.file_count,
        "size_bytes": row.size_bytes,
        "progress_bytes": row.progress_bytes,
        "progress_total": row.progress_total,
        "queue_status": row.queue_status,
        "exit_code": row.exit_code,
        "job_outcome": row.job_outcome,
        "results": row.results_path if row.results_fetched else None,
        "wrapup": "pending" if row.wrapup else None,
        "wrapup_note": row.wrapup_note,
        "next_attempt_at": None if terminal else iso(row.next_attempt_at),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "durations": durations.of_case(row, history or [], now),
        "job_times": job_times_json(row),
    }


def job_times_json(row: CaseRow) -> dict:
    """When the current run's job started and ended, and who said so (caseflow.durations)."""
    return {
        "started": iso(row.job_started),
        "ended": iso(row.job_ended),
        "source": row.job_times_source,
    }


def upload_progress(row: CaseRow, now: float) -> dict | None:
    """Bytes sent of the case's upload in flight (the store clears them at every transition),
    the average rate and the time left at that rate, or None when nothing is uploading.

    The attempt began at the later of the case's last change (the slot was taken, or the
    last attempt failed) and its next attempt's time: the upload is dispatched at once
    then. Progress is stored at most once a second, so the rate may read up to a second
    of sending low.
    """
    if not row.progress_total or row.progress_bytes is None:
        return None
    sent = row.progress_bytes
    elapsed = now - max(row.updated_at, row.next_attempt_at or 0.0)
    rate = sent / elapsed if elapsed > 0 and sent else None
    left = (row.progress_total - sent) / rate if rate else None
    return {
        "bytes": sent,
        "total": row.progress_total,
        "percent": round(100 * sent / row.progress_total, 1),
        "rate_bytes_per_second": round(rate) if rate else None,
        "seconds_left": round(left, 1) if left is not None else None,
    }


def upload_text(row: CaseRow, now: float) -> str | None:
    """ "1.2 GB of 1.5 GB (80%), 410.3 MB/s, 1 s left" while the case uploads, else None."""
    p = upload_progress(row, now)
    if p is None:
        return None
    text = f"{size(p['bytes'])} of {size(p['total'])} ({100 * p['bytes'] // p['total']}%)"
    if p["rate_bytes_per_second"]:
        text += f", {size(p['rate_bytes_per_second'])}/s"
        if p["seconds_left"]:
            text += f", {duration(p['seconds_left'])} left"
    return text


def history_json(history: list[HistoryRow]) -> list[dict]:
    return [
        {"from": h.src, "to": h.dst, "trigger": h.trigger, "at": iso(h.at), "detail": h.detail}
        for h in history
    ]


def runs_of(database: Path, row: CaseRow, history: list[HistoryRow]) -> list[dict]:
    """Every run of the case, from its history: when it began, how it ended (the move that
    ended it: into a terminal state, or the spec's rerun when the infrastructure took its
    job away; null while it goes on) and its kept log. A run begins at the case's first
    move, at a move out of a terminal state (a retry) and at a rerun."""
    spec = load_spec()
    rerun = spec.trigger_for(JOB_END_ROLES[LOST])
    terminal = set(spec.terminal_states)
    runs: list[dict] = []

    def close(end: HistoryRow) -> None:
        runs[-1].update(ended_at=iso(end.at), ended=end.trigger, to=end.dst, detail=end.detail)

    for h in history:
        if not runs or h.trigger == rerun or (h.src in terminal and h.dst not in terminal):
            if runs and runs[-1]["ended"] is None:
                close(h)
            n = len(runs) + 1
            log = job_log_path(database, replace(row, run=n))
            runs.append(
                {
                    "run": n,
                    "began_at": iso(h.at),
                    "ended_at": None,
                    "ended": None,
                    "to": None,
                    "detail": None,
                    "job_log": str(log) if log.exists() else None,
                }
            )
        elif h.dst in terminal and runs[-1]["ended"] is None:
            close(h)
    return runs


def case_detail(
    database: Path,
    row: CaseRow,
    history: list[HistoryRow],
    now: float,
    waits: Mapping[str, str] | None = None,
) -> dict:
    """One case as `caseflow show --json` prints it: the status fields, where its job log
    is, its upload in flight and its whole transition history."""
    out = case_json(row, now=now, history=history, waits=waits)
    log_file = job_log_path(database, row)
    out["job_log"] = str(log_file) if log_file.exists() else None
    out["upload"] = upload_progress(row, now)
    out["history"] = history_json(history)
    out["runs"] = runs_of(database, row, history)
    return out


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> tuple[list[str], int | None]:
    """The last `lines` lines of a job log and its size in bytes (([], None) when absent),
    reading at most the last 64 KiB; control characters as escapes (job_output.clean)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - _TAIL_BYTES))
            data = f.read(_TAIL_BYTES)
    except OSError:
        return [], None
    text = clean(data.decode("utf-8", errors="replace")).splitlines()
    if size > _TAIL_BYTES and text:
        text = text[1:]  # the first line read is probably cut
    return text[-lines:], size


def slot_json(s: SlotRow) -> dict:
    """One slot as `caseflow resources --json` lists it."""
    return {
        "host": s.host,
        "group": s.grp,
        "slot": s.idx,
        "device": s.device,
        "case_id": s.case_id,
        "case_name": s.case_name,
        "case_state": s.case_state,
        "retired": s.retired,
    }


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


JOB_TIMES_TEXT = {
    durations.QUEUE: "the job's start and end as its queue reported them",
    durations.OBSERVED: "the job's start or end as caseflow's polls saw it",
    durations.UNKNOWN: "the job's times are not known (the case is from an older caseflow)",
}


def durations_block(row: CaseRow, found: dict, terminal_states) -> str:
    """The durations of `caseflow show`: one line per phase of the current run; the phase
    a case still in progress is in counts "so far"."""
    active = row.state not in terminal_states
    current = next((p for p in reversed(durations.PHASES) if found[p] is not None), None)
    head = f"durations (run {row.run}"
    if row.job_times_source in JOB_TIMES_TEXT:
        head += f"; {JOB_TIMES_TEXT[row.job_times_source]}"
    lines = [f"\n{head}):"]
    for key in durations.KEYS:
        value = found[key]
        text = "-" if value is None else f"{value:.1f} s" if value < 10 else duration(value)
        if active and value is not None and key in (current, durations.TOTAL):
            text += " so far"
        lines.append(f"  {key.replace('_', ' '):11} {text}")
    return "\n".join(lines)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:  # a row's cells beyond the headers are left out, as they always were
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip())
    return "\n".join(lines)


def state_cell(row: CaseRow, now: float, waits: Mapping[str, str] | None = None) -> str:
    """The STATE column: the state and what it is doing inside it (the same text on the
    status page and in `status --json` as `state_text`). It reads the store's columns and
    the spec's flags, never a state's name. `waits` (`host_waits`): a case whose host cannot
    take work now says so, not "0 B of 12 KB (0%)" (issue 27)."""
    text = row.state
    ended = _is_terminal(row.state)
    host = row.slot_host or row.host
    why = (waits or {}).get(host or "") if not ended and _is_host_work(row.state) else None
    progress = upload_text(row, now)
    if why:
        text += f" (waiting for host {printable(host)}: {why})"
    elif waits and not ended and _takes_slot(row.state) and f"group {row.grp}" in waits:
        text += f" (waiting for {waits[f'group {row.grp}']})"
    elif progress:
        text += f" ({progress})"
    if row.queue_status and row.queue_status != RUNNING:  # the queue says more than "running"
        text += f" ({row.queue_status})"
    if row.job_outcome == LOST and not ended:
        text += " (its job was taken away by the infrastructure; fetching what it wrote)"
    elif row.job_outcome and not ended:
        text += f" (job ended: {row.job_outcome}; fetching results)"
    if row.reruns and not ended:  # run again by itself: `show` says why
        text += f" (run {row.run}: rerun {row.reruns} after its job was lost)"
    if row.reason and not row.job_outcome and not ended:
        text += " (stopping its job before it fails)"
    if row.slot_index is not None and ended:
        text += " (its job is being stopped; it keeps its slot until then)"
    if row.request:
        text += f" ({row.request} requested)"
    return one_line(text, width=10_000)


def reason_parts(row: CaseRow) -> list[str] | None:
    """Why the case failed (or is failing), or how it keeps trying after errors; None when
    neither."""
    if row.reason:
        return [row.reason]
    if row.last_error:
        return [
            "retrying since ",
            _stamp(row.failing_since),
            f" ({plural(row.attempts, 'attempt')}): {row.last_error}",
        ]
    return None


def reason_cell(row: CaseRow) -> str:
    parts = reason_parts(row)
    return one_line("".join(parts)) if parts else "-"


def status_table(
    rows: list[CaseRow],
    now: float | None = None,
    histories: dict[int, list[HistoryRow]] | None = None,
    waits: Mapping[str, str] | None = None,
) -> str:
    """The table `caseflow status` prints (and `--watch` redraws). TIME: the current run's
    total so far, its time to result once it has ended (from `histories`, the cases')."""
    now = time.time() if now is None else now
    histories = histories or {}
    return table(
        ["ID", "NAME", "STATE", "GROUP", "HOST", "SLOT", "TASK", "TIME", "UPDATED", "REASON"],
        [
            [
                str(r.id),
                printable(r.name),
                state_cell(r, now, waits),
                r.grp or "-",
                r.slot_host or r.host or "-",
                "-" if r.slot_index is None else str(r.slot_index),
                r.task_id or "-",
                durations.short(durations.of_case(r, histories.get(r.id, []), now)["total"]),
                iso(r.updated_at) or "-",
                reason_cell(r),
            ]
            for r in rows
        ],
    )
