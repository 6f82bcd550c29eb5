"""What Slurm says of caseflow's jobs, read: the poll script's sections (scripts/slurm-poll.sh),
squeue's lines, sacct's, and a job's state and exit code turned into its outcome. Pure
functions of the text; the backend (slurm.py) runs the commands."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from . import FAILURE, LOST, RUNNING, SUCCESS, JobRef, JobStatus
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
# Of the FAILED_STATES, the ends where the job did not fail but the infrastructure took it
# away: its node failed (or did not boot), or a job of a higher priority took its resources.
# Slurm reports them once the job has ended on its nodes (it shows COMPLETING until then), so
# none of its processes can still run: the engine runs the case again (LOST). TIMEOUT,
# OUT_OF_MEMORY, FAILED, CANCELLED (by a person or by caseflow), DEADLINE are the job's own.
# The cause as a person reads it: {nodes} is "node c1", "nodes c[1-4]" or "its node", {one}
# the same with "one of nodes c[1-4]" (Slurm does not say which of a job's nodes failed).
LOST_ENDS = {
    "NODE_FAIL": "{one} failed (Slurm NODE_FAIL)",
    "BOOT_FAIL": "{one} failed to boot (Slurm BOOT_FAIL)",
    "PREEMPTED": "preempted by a higher-priority job on {nodes} (Slurm PREEMPTED)",
}


# -- reading Slurm's answers -------------------------------------------------------------------
SQUEUE_FIELDS = (
    "id", "state", "reason", "exit_code", "nodes", "gres", "start", "end", "restarts", "name",
)  # fmt: skip
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
    """The poll's squeue lines ("ID|STATE|REASON|EXIT_CODE|NODES|GRES|START|END|RESTARTS|NAME",
    the times as Unix time) -> ({job id: fields}, the lines that name no job id caseflow can
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


def _lost(state: str, nodes: str | None) -> JobStatus:
    """The LOST outcome of a job Slurm ended in `state` (one of LOST_ENDS) on `nodes`
    (Slurm's node list: "c1", "c[1-4]", "c1,c3"; "" or "(null)" when it names none)."""
    nodes = (nodes or "").strip()
    if not nodes or nodes in ("(null)", "None", "None assigned", "N/A"):
        said = one = "its node"
    elif "," in nodes or "[" in nodes:
        said, one = f"nodes {nodes}", f"one of nodes {nodes}"
    else:
        said = one = f"node {nodes}"
    return JobStatus(LOST, LOST_ENDS[state].format(nodes=said, one=one))


def ended(
    job_id: str,
    state: str,
    code: int | None,
    signal: int | None,
    started: float | None = None,
    stopped: float | None = None,
    nodes: str | None = None,
) -> JobStatus:
    """The outcome of a job Slurm says has ended in `state` (it ran from `started` to
    `stopped` on `nodes`, when Slurm says)."""
    status = _ended(job_id, state, code, signal, nodes)
    return replace(status, started=started, ended=stopped)


def _ended(
    job_id: str, state: str, code: int | None, signal: int | None, nodes: str | None
) -> JobStatus:
    if state == "COMPLETED":
        return JobStatus(SUCCESS, f"slurm job {job_id} COMPLETED, exit code 0", 0)
    if state not in FAILED_STATES:
        raise BadOutput(f"unknown Slurm job state {state!r} of job {job_id}")
    if state in LOST_ENDS:
        return _lost(state, nodes)
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
        restarts = job.get("restarts", "")
        if restarts.isdigit() and int(restarts):
            # Slurm put the job back in its queue itself (preempted with PreemptMode=REQUEUE,
            # its node failed, `scontrol requeue`): the same job id, pending again, then running
            # again. It stays RUNNING (waiting while pending): Slurm may start it again at any
            # moment, so it keeps its case's slot (the group's limit of jobs in the queue).
            detail += f", requeued by Slurm ({int(restarts)})"
        if state in WAITING_STATES:  # its StartTime is when Slurm expects to start it
            return JobStatus(RUNNING, detail, waiting=True)
        return JobStatus(RUNNING, detail, started=epoch(job.get("start")))
    code, signal = _exit_of(job.get("exit_code", ""))
    return ended(
        job_id, state, code, signal, epoch(job.get("start")), epoch(job.get("end")),
        job.get("nodes"),
    )  # fmt: skip


Accounted = tuple[str, str, int | None, int | None, float | None, float | None, str]


def parse_sacct(text: str) -> dict[str, list[Accounted]]:
    """`sacct -X -P -n -o JobID,JobName,State,ExitCode,Start,End,NodeList` lines (the times as
    Unix time) -> {id: [(name, state, exit, signal, start, end, nodes), ...]} in the order
    printed (an id repeats when Slurm's ids started over, or in the completion log when Slurm
    requeued the job: one line per time it ended)."""
    out: dict[str, list] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 7 or not parts[0].isdigit():
            continue
        job_id, name, state, exit_code, start, end, nodes = parts
        state = state.split()[0] if state.strip() else ""  # "CANCELLED by 1000"
        code = sig = None
        m = re.fullmatch(r"(\d+):(\d+)", exit_code.strip())
        if m:
            code, sig = int(m.group(1)), int(m.group(2))
        out.setdefault(job_id, []).append(
            (name, state, code, sig, epoch(start), epoch(end), nodes.strip())
        )
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
