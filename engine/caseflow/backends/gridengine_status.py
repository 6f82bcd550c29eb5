"""What Grid Engine says of caseflow's jobs, read: the poll script's sections
(scripts/gridengine-poll.sh), `qstat -xml`, `qacct -j`, and a job's state letters or its
accounting record turned into its outcome. Pure functions of the text; the backend
(gridengine.py) runs the commands. Real answers of Grid Engine 8.1.9 are in
tests/data/gridengine/."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timezone

from . import FAILURE, RUNNING, SUCCESS, JobRef, JobStatus
from .output import BadOutput, quote_start
from .scripted import sections, short
from .times import local, zone_offset

# The letters of a job's state in qstat (qstat(1)); a job qstat lists has not ended.
STATES = {
    "q": "queued",
    "w": "waiting",
    "h": "held",
    "r": "running",
    "t": "being transferred to its host",
    "R": "restarted",
    "s": "suspended",
    "S": "suspended (its queue is)",
    "T": "suspended (a load threshold of its queue)",
    "d": "being deleted",
    "E": "in ERROR",
}
STARTED = "rtsST"  # the letters of a job that has started (running, or suspended since)
# qacct's answer when it has no record of the job: "error: job id 12 not found", or the
# accounting file is not there yet (no job has ended since the cell was made)
NO_RECORD = re.compile(r"job id \S+ not found|accounting: No such file|no jobs running since")


@dataclass(frozen=True)
class Queued:
    """A job as `qstat -xml` lists it (a `job_list` element)."""

    id: str
    name: str
    state: str  # its letters: "r", "qw", "Eqw", "hqw", "dr", ...
    queue: str  # "all.q@node1" once it runs, else ""
    slots: str
    start: str = ""  # JAT_start_time once it runs: the host's local time, no offset


def _text(element: ET.Element, tag: str) -> str:
    return (element.findtext(tag) or "").strip()


def parse_qstat(text: str) -> tuple[dict[str, Queued], list[str]]:
    """`qstat -xml` -> ({job id: entry}, the entries without a job number caseflow can read,
    as text). BadOutput when the text is not qstat's XML."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise BadOutput(
            f"qstat -xml printed no XML caseflow can read ({exc}): {quote_start(text)}"
        ) from None
    if root.tag != "job_info":
        raise BadOutput(f"qstat -xml printed <{root.tag}>, not <job_info>: {quote_start(text)}")
    jobs: dict[str, Queued] = {}
    unreadable = []
    for entry in root.iter("job_list"):
        number = _text(entry, "JB_job_number")
        if not number.isdigit():
            unreadable.append(ET.tostring(entry, encoding="unicode"))
            continue
        jobs.setdefault(
            number,
            Queued(
                id=number,
                name=entry.findtext("JB_name") or "",
                state=_text(entry, "state"),
                queue=_text(entry, "queue_name"),
                slots=_text(entry, "slots"),
                start=_text(entry, "JAT_start_time"),
            ),
        )
    return jobs, unreadable


def error_reasons(lines: Sequence[str]) -> list[str]:
    """`qstat -j ID`'s lines "error reason    1:      DATE [uid:pid]: error: WHY" -> the
    reasons, their dates and numbers left out."""
    out = []
    for line in lines:
        reason = re.sub(r"^error reason\s+\d+:\s*", "", line.strip())
        reason = re.sub(r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d \[[^]]*\]:\s*", "", reason)
        if reason:
            out.append(reason)
    return out


def queued_outcome(
    job: Queued, reasons: Sequence[str] = (), zone: timezone | None = None
) -> JobStatus:
    """The outcome of a job qstat lists: it has not ended (RUNNING); the detail says how it
    stands, and when it started (its JAT_start_time in the host's `zone`) or that it has not
    (`waiting`). A job in an error state (Eqw) never starts by itself: it waits for a person."""
    letters = job.state
    if not letters or set(letters) - set(STATES):
        raise BadOutput(f"qstat lists job {job.id} in a state caseflow does not know: {letters!r}")
    status = _queued(job, reasons)
    if not set(letters) & set(STARTED):
        return replace(status, waiting=True)
    return replace(status, started=local(job.start, zone))


def _queued(job: Queued, reasons: Sequence[str]) -> JobStatus:
    letters, jid = job.state, job.id
    if "E" in letters:
        why = "; ".join(reasons) or "qstat -j gives no reason"
        return JobStatus(
            RUNNING,
            short(
                f"{letters}: in ERROR, Grid Engine will not start it until a person clears the "
                f"error (qmod -cj {jid}) or deletes the job (qdel {jid}): {why}"
            ),
        )
    if "d" in letters:
        return JobStatus(RUNNING, f"{letters}: being deleted")
    if "h" in letters:
        return JobStatus(RUNNING, f"{letters}: held, it waits for qrls {jid}")
    for letter in "sST":
        if letter in letters:
            return JobStatus(RUNNING, f"{letters}: {STATES[letter]}")
    if "r" in letters or "t" in letters:
        where = f" on {job.queue}" if job.queue else ""
        slots = f", {job.slots} slots" if job.slots not in ("", "1") else ""
        return JobStatus(RUNNING, f"{letters}{where}{slots}")
    return JobStatus(RUNNING, f"{letters}: waiting in the queue")


def parse_qacct(text: str) -> list[dict[str, str]]:
    """`qacct -j ID`'s records, in the order printed (an id may repeat: Grid Engine's ids
    start over), each {field: value} ("failed": "100 : assumedly after job")."""
    records: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.startswith("====="):
            records.append({})
        elif records and line.strip():
            key, _, value = line.strip().partition(" ")
            records[-1][key] = value.strip()
    return records


def accounted_outcome(
    job_id: str, record: dict[str, str], zone: timezone | None = None
) -> JobStatus:
    """The outcome of a job from its accounting record: `failed` not 0 (Grid Engine could not
    start it, or killed it: 100 after qdel or a limit) is a failure whatever the exit status;
    else the exit status decides. With the record's start_time and end_time (in the host's
    `zone`; "-/-" for a job that never started)."""
    status = _accounted(job_id, record)
    return replace(
        status,
        started=local(record.get("start_time"), zone),
        ended=local(record.get("end_time"), zone),
    )


def _accounted(job_id: str, record: dict[str, str]) -> JobStatus:
    failed = re.fullmatch(r"(\d+)\s*(?::\s*(.*))?", record.get("failed", ""))
    status = re.match(r"(-?\d+)\b", record.get("exit_status", ""))
    if not failed or not status:
        raise BadOutput(
            f"the accounting record of grid engine job {job_id} has no failed/exit_status "
            f"caseflow can read: failed {record.get('failed')!r}, "
            f"exit_status {record.get('exit_status')!r}"
        )
    code = int(status.group(1))
    if int(failed.group(1)):
        why = failed.group(2) or "no reason given"
        return JobStatus(
            FAILURE,
            f"grid engine job {job_id} failed ({failed.group(1)}: {why}), exit status {code}",
        )
    if code == 0:
        return JobStatus(SUCCESS, f"grid engine job {job_id} ended, exit code 0", 0)
    return JobStatus(FAILURE, f"grid engine job {job_id} ended, exit code {code}", code)


class Poll:
    """The poll script's output, read (see scripts/gridengine-poll.sh); `jobs` in the order
    they were asked about."""

    def __init__(self, text: str, jobs: Sequence[JobRef]):
        self.index = {j.case_id: n for n, j in enumerate(jobs)}
        self.qstat_rc: int | None = None
        self.qstat = ""  # qstat -xml's text
        self.reasons: dict[int, list[str]] = {}  # job index -> why it is in an error state
        self.exits: dict[int, str] = {}  # job index -> its exit code file's line
        self.qacct: dict[int, tuple[int, str]] = {}  # job index -> (qacct's exit code, text)
        self.queued: dict[str, Queued] = {}  # qstat's entries (parse_qstat), once it answered
        self.unreadable: list[str] = []
        # the host's offset from UTC: Grid Engine prints its times without one
        self.zone: timezone | None = None
        for head, body in sections(text, "Grid Engine"):
            if head[0] == "zone" and len(head) == 2:
                self.zone = zone_offset(head[1])
            elif head[0] == "qstat" and len(head) == 2 and head[1].isdigit():
                self.qstat_rc, self.qstat = int(head[1]), "\n".join(body)
            elif head[0] == "reason" and len(head) == 2 and head[1].isdigit():
                self.reasons[int(head[1])] = error_reasons(body)
            elif head[0] == "exit" and len(head) >= 2 and head[1].isdigit():
                self.exits[int(head[1])] = " ".join(head[2:])
            elif head[0] == "qacct" and len(head) == 3 and head[1].isdigit() and head[2].isdigit():
                self.qacct[int(head[1])] = (int(head[2]), "\n".join(body))
        if self.qstat_rc is None:
            raise BadOutput(f"the Grid Engine poll printed no qstat section: {quote_start(text)}")
        if self.qstat_rc == 0:
            self.queued, self.unreadable = parse_qstat(self.qstat)
