"""What Slurm says of caseflow's jobs, read: the poll script's sections (scripts/slurm-poll.sh),
squeue's lines, sacct's, and a job's state and exit code turned into its outcome. Pure
functions of the text; the backend (slurm.py) runs the commands."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from . import FAILURE, RUNNING, SUCCESS, JobRef, JobStatus
from .output import BadOutput, quote_start
from .scripted import sections
from .times import epoch

# Slurm's job states (squeue, sacct). Everything not yet ended counts as running.
RUNNING_STATES = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "SUSPENDED",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "SPECIAL_EXIT",
}
FAILED_STATES = {
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
}


# -- reading Slurm's answers -------------------------------------------------------------------
SQUEUE_FIELDS = ("id", "state", "reason", "exit_code", "nodes", "gres", "start", "end", "name")
# of the RUNNING_STATES, those of a job that has not started (its StartTime is a forecast)
WAITING_STATES = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
}


def _exit_of(value: str) -> tuple[int | None, int | None]:
    """(exit code, signal) of squeue's exit_code: the raw wait status (22.05: 1792 = exit 7,
    15 = killed by SIGTERM), or "CODE:SIGNAL" as sacct writes it."""
    value = value.strip()
    if value.isdigit():
        raw = int(value)
        return (raw >> 8) & 0xFF, raw & 0x7F
    m = re.fullmatch(r"(\d+):(\d+)", value)
    if m:
        return int(m.group(1)), int(m.group(2))
    return None, None


def parse_squeue(lines: Sequence[str]) -> tuple[dict[str, dict], list[str]]:
    """The poll's squeue lines ("ID|STATE|REASON|EXIT_CODE|NODES|GRES|START|END|NAME", the
    times as Unix time) -> ({job id: fields}, the lines that name no job id caseflow can
    read)."""
    jobs: dict[str, dict] = {}
    unreadable = []
    for line in lines:
        values = line.split("|", len(SQUEUE_FIELDS) - 1)
        if len(values) != len(SQUEUE_FIELDS) or not values[0].strip().isdigit():
            unreadable.append(line)
            continue
        job = dict(zip(SQUEUE_FIELDS, (v.strip() for v in values), strict=True))
        job["name"] = values[-1]  # as given (only the line's end is cut)
        jobs[job["id"]] = job
    return jobs, unreadable


def ended(
    job_id: str,
    state: str,
    code: int | None,
    signal: int | None,
    started: float | None = None,
    stopped: float | None = None,
) -> JobStatus:
    """The outcome of a job Slurm says has ended in `state` (it ran from `started` to
    `stopped`, when Slurm says)."""
    status = _ended(job_id, state, code, signal)
    return replace(status, started=started, ended=stopped)


def _ended(job_id: str, state: str, code: int | None, signal: int | None) -> JobStatus:
    if state == "COMPLETED":
        return JobStatus(SUCCESS, f"slurm job {job_id} COMPLETED, exit code 0", 0)
    if state not in FAILED_STATES:
        raise BadOutput(f"unknown Slurm job state {state!r} of job {job_id}")
    detail = f"slurm job {job_id} {state}"
    if signal:
        detail += f", signal {signal}"
    elif code is not None and (code or state == "FAILED"):
        detail += f", exit code {code}"
    exit_code = code if not signal and state == "FAILED" else None
    return JobStatus(FAILURE, detail, exit_code)


def squeue_outcome(job_id: str, job: dict) -> JobStatus:
    """The outcome of a job from its squeue line (see parse_squeue)."""
    state = job.get("state", "").split(" ")[0]  # "CANCELLED by 0"
    if not state:
        raise BadOutput(f"squeue shows job {job_id} without a state")
    if state in RUNNING_STATES:
        reason, detail = job.get("reason", ""), state
        if reason and reason not in ("None", "(null)"):
            detail += f" ({reason})"
        elif state == "RUNNING":
            nodes, gres = job.get("nodes", ""), job.get("gres", "")
            detail += (f" on {nodes}" if nodes else "") + (
                f", {gres}" if gres and gres != "N/A" else ""
            )
        if state in WAITING_STATES:  # its StartTime is when Slurm expects to start it
            return JobStatus(RUNNING, detail, waiting=True)
        return JobStatus(RUNNING, detail, started=epoch(job.get("start")))
    code, signal = _exit_of(job.get("exit_code", ""))
    return ended(job_id, state, code, signal, epoch(job.get("start")), epoch(job.get("end")))


Accounted = tuple[str, str, int | None, int | None, float | None, float | None]


def parse_sacct(text: str) -> dict[str, list[Accounted]]:
    """`sacct -X -P -n -o JobID,JobName,State,ExitCode,Start,End` lines (the times as Unix
    time) -> {id: [(name, state, exit, signal, start, end), ...]} in the order printed (an id
    may repeat when Slurm's ids started over)."""
    out: dict[str, list] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 6 or not parts[0].isdigit():
            continue
        job_id, name, state, exit_code, start, end = parts
        state = state.split()[0] if state.strip() else ""  # "CANCELLED by 1000"
        code = sig = None
        m = re.fullmatch(r"(\d+):(\d+)", exit_code.strip())
        if m:
            code, sig = int(m.group(1)), int(m.group(2))
        out.setdefault(job_id, []).append((name, state, code, sig, epoch(start), epoch(end)))
    return out


class Poll:
    """The poll script's output, read (see scripts/slurm-poll.sh); `jobs` in the order they
    were asked about."""

    def __init__(self, text: str, jobs: Sequence[JobRef] = ()):
        self.positions = {j.case_id: n for n, j in enumerate(jobs)}
        self.squeue_rc: int | None = None
        self.squeue_lines: list[str] = []
        self.exits: dict[int, str] = {}  # job index -> its exit file's line
        self.sacct: dict[str, list] = {}  # see parse_sacct
        self.missing: set[str] | None = None  # ids squeue did not list (None: none)
        for head, body in sections(text, "Slurm"):
            words = " ".join(head).split(" ", 2)
            if words[0] == "squeue" and len(words) == 2 and words[1].isdigit():
                self.squeue_rc, self.squeue_lines = int(words[1]), body
            elif words[0] == "exit" and len(words) == 3 and words[1].isdigit():
                self.exits[int(words[1])] = words[2]
            elif words[0] == "sacct" and len(words) == 3:
                self.missing = set(words[2].split(","))
                self.sacct = parse_sacct("\n".join(body))
        if self.squeue_rc is None:
            raise BadOutput(f"the Slurm poll printed no squeue section: {quote_start(text)}")
        # {job id: squeue's fields}, and the lines that name no job id caseflow can read
        self.queue, self.unreadable = parse_squeue(self.squeue_lines)
