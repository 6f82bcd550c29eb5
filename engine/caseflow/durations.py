"""How long a case's run spent in each phase, from its history and its job's times.

The phases of a run, in order; together they make up its total (the time to result):

- quiet       detected until stable (the folder stopped changing; a retry has none)
- slot_wait   stable until it holds a slot (validation, and waiting for a slot of its group)
- upload      holding a slot until the case folder is on the host (a requeue adds its time)
- queue_wait  the upload's end (the submit is sent) until the job started
- run         the job's start until its end
- results     the job's end until the case ended (its log and results fetched)

Which state counts for which phase comes from the spec's flags, never from a state's name:
the initial state is quiet; one where a job may run is the job's (split by the job's start
and end); one that holds a slot is the upload; any other active state waits for a slot.

The job's start and end are what the queue (or the direct runner's wrapper) reports when it
does (`JobStatus.started`, `ended`); otherwise what caseflow saw: the poll that first saw the
job running, and the poll that saw it end. A queue's time outside what caseflow saw (before the
submit was sent, after the poll that saw the job end: the host's clock is off) is not used.
A run that is still going counts its current phase up to now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache

from .backends import JobStatus
from .spec import MachineSpec, load_spec
from .store import CaseRow, HistoryRow, JobTimes

log = logging.getLogger("caseflow.engine")

PHASES = ("quiet", "slot_wait", "upload", "queue_wait", "run", "results")
TOTAL = "total"
KEYS = (*PHASES, TOTAL)  # `durations` in `status --json`, in this order
QUEUE, OBSERVED, UNKNOWN = "queue", "observed", "unknown"  # JobTimes.source
# how far a queue's time may lie outside what caseflow saw and still be taken (moved inside):
# Slurm and Grid Engine give whole seconds, and two clocks are never quite the same
TOLERANCE = 2.0
_JOB = "job"


@lru_cache(maxsize=1)
def default_spec() -> MachineSpec:
    return load_spec()


def _kinds(spec: MachineSpec) -> dict[str, str]:
    """Each state's phase (`_JOB` for the states a job may run in; "" for the terminal ones)."""
    out = {}
    for s in spec.states:
        if s.terminal:
            out[s.name] = ""
        elif s.name == spec.initial:
            out[s.name] = "quiet"
        elif s.job_may_run:
            out[s.name] = _JOB
        elif s.holds_slot:
            out[s.name] = "upload"
        else:
            out[s.name] = "slot_wait"
    return out


def runs(spec: MachineSpec, history: Sequence[HistoryRow]) -> list[list[HistoryRow]]:
    """The history cut into runs: a run begins where the case was detected (no source) or
    left a terminal state (a retry)."""
    terminal = set(spec.terminal_states)
    out: list[list[HistoryRow]] = []
    for h in history:
        if not out or h.src is None or h.src in terminal:
            out.append([])
        out[-1].append(h)
    return out


def phases(
    spec: MachineSpec, run: Sequence[HistoryRow], job: JobTimes, now: float
) -> dict[str, float | None]:
    """Seconds of each phase of one run (its history rows, oldest first), and its total; None
    for a phase the run did not go through (or whose length is not known: the job's phases of a
    case older than the keeping of job times). `job`: the run's job times."""
    out: dict[str, float | None] = dict.fromkeys(KEYS)
    if not run:
        return out
    kinds = _kinds(spec)
    ended = kinds.get(run[-1].dst) == ""
    end = run[-1].at if ended else max(now, run[-1].at)
    out[TOTAL] = end - run[0].at
    spans: list[tuple[float, float]] = []  # in the states a job may run in
    for i, h in enumerate(run):
        kind = kinds.get(h.dst, "")
        if kind == "":
            break
        until = run[i + 1].at if i + 1 < len(run) else end
        if kind == _JOB:
            spans.append((h.at, until))
        else:
            out[kind] = (out[kind] or 0.0) + max(0.0, until - h.at)
    if not spans or (job.started is None and job.source == UNKNOWN):
        return out
    low, high = spans[0][0], spans[-1][1]

    def within(a: float, b: float) -> float:
        return sum(max(0.0, min(b, y) - max(a, x)) for x, y in spans)

    start = None if job.started is None else min(max(job.started, low), high)
    stop = None if job.ended is None else min(max(job.ended, low if start is None else start), high)
    inf = float("inf")
    if start is None:  # not started (as far as caseflow knows): it waited all the while
        out["queue_wait"] = within(-inf, inf if stop is None else stop)
    else:
        out["queue_wait"] = within(-inf, start)
        out["run"] = within(start, inf if stop is None else stop)
    if stop is not None:
        out["results"] = within(stop, inf)
    return out


def of_case(
    row: CaseRow, history: Sequence[HistoryRow], now: float, spec: MachineSpec | None = None
) -> dict[str, float | None]:
    """The durations of the case's current run (a retried case: its latest), rounded to
    milliseconds, as `status --json` gives them."""
    spec = spec or default_spec()
    all_runs = runs(spec, history)
    current = all_runs[-1] if all_runs else []
    found = phases(
        spec, current, JobTimes(row.job_started, row.job_ended, row.job_times_source), now
    )
    return {k: None if v is None else round(v, 3) for k, v in found.items()}


# -- keeping a job's times, as the polls tell them -------------------------------------------
def _taken(
    said: float | None, submitted: float | None, now: float, what: str, case_id: int
) -> float | None:
    """A time the queue said, when it lies within what caseflow saw (from the submit to now,
    give or take TOLERANCE), moved inside; else None (logged: the host's clock is off)."""
    if said is None:
        return None
    low = submitted if submitted is not None else -float("inf")
    if low - TOLERANCE <= said <= now + TOLERANCE:
        return min(max(said, low), now)
    log.warning(
        "case %s: the queue says its job %s %.0f s %s; the host's clock seems off, so the time "
        "caseflow saw is kept instead",
        case_id,
        what,
        low - said if said < low else said - now,
        "before its submit was sent" if said < low else "from now",
    )
    return None


def on_running(
    case_id: int,
    kept: JobTimes,
    status: JobStatus,
    now: float,
    submitted: Callable[[], float | None],
) -> JobTimes | None:
    """What to keep of the job's start from a poll that found it RUNNING (None: nothing new).
    The queue's start replaces one caseflow saw; without it, the first poll that sees the job
    running (not waiting) is its start, unless the case's job times are unknown."""
    if status.waiting:
        return None
    if status.started is not None and not (kept.source == QUEUE and kept.started is not None):
        taken = _taken(status.started, submitted(), now, "started", case_id)
        if taken is not None:
            return JobTimes(taken, None, QUEUE)
    if kept.started is None and kept.source is None:
        return JobTimes(now, None, OBSERVED)
    return None


def on_end(
    case_id: int,
    kept: JobTimes,
    status: JobStatus,
    now: float,
    submitted: Callable[[], float | None],
) -> JobTimes:
    """The job's times once it has ended: the queue's start and end where it gives them,
    else the start kept and this poll's time as its end."""
    low = submitted() if status.started is not None or status.ended is not None else None
    start_source: str | None = QUEUE
    started = _taken(status.started, low, now, "started", case_id)
    if started is None:
        started, start_source = kept.started, kept.source
    ended, end_source = _taken(status.ended, low, now, "ended", case_id), QUEUE
    if ended is None:
        ended, end_source = now, OBSERVED
    if started is not None and started > ended:
        started = ended
    if started is None and start_source == UNKNOWN:
        source = UNKNOWN
    elif end_source == QUEUE and start_source in (QUEUE, None):
        source = QUEUE
    else:
        source = OBSERVED
    return JobTimes(started, ended, source)


def short(seconds: float | None) -> str:
    """A duration in a table cell: "42s", "12m05s", "3h07m", "2d05h"; "-" when not known."""
    if seconds is None:
        return "-"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
