"""Reading pueue's answers: the task states of pueue 3.x and 4.x, and the poll, one remote
command that prints `pueue status --json` and what the jobs' own records say (see pueue.py).

What cannot be read about one task is that task's problem alone (UNREADABLE); only an answer
that is not pueue's JSON at all, or that ended early, is a problem of the whole poll (BadOutput).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

from ..transports.shell import script
from . import FAILURE, RUNNING, SUCCESS, UNREADABLE, JobStatus
from .output import BadOutput, quote_start
from .times import rfc3339

RUNNING_STATES = ("Queued", "Stashed", "Running", "Paused", "Locked")
WAITING_STATES = ("Queued", "Stashed", "Locked")  # of them, not started yet

# The poll: scripts/pueue-poll.sh
POLL = script(__package__, "pueue-poll.sh", "pueue-client.sh")


def parse_status(text: str) -> dict:
    """`pueue status --json` output → {"tasks": {id: task}, "groups": {...}}; BadOutput if not."""
    try:
        data = json.loads(text)
    except ValueError:
        raise BadOutput(
            f"pueue status printed something that is not JSON: {quote_start(text)}"
        ) from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("tasks"), dict)
        or not isinstance(data.get("groups", {}), dict)
    ):
        raise BadOutput(f"pueue status JSON has no tasks map: {quote_start(text)}")
    return data


def status_name(task: dict) -> str | None:
    """The name of a task's status in either encoding (3.x "Running", 4.x {"Running": {...}})."""
    status = task.get("status")
    if isinstance(status, str):
        return status
    if isinstance(status, dict) and len(status) == 1:
        return next(iter(status))
    return None


def done_result(task: dict):
    """The result of a Done task in either encoding: "Success", {"Failed": 3}, "Killed", ..."""
    body = task["status"]["Done"]
    return body.get("result") if isinstance(body, dict) and "result" in body else body


def _unreadable(task: dict, what) -> JobStatus:
    return JobStatus(
        UNREADABLE,
        f"pueue reports task {task.get('id')} in a form caseflow does "
        f"not know: {quote_start(json.dumps(what))}",
    )


def task_times(task: dict) -> tuple[float | None, float | None]:
    """When pueue started the task and saw it end: 3.x keeps `start` and `end` in the task,
    4.x in its status's body ({"Done": {"start": ..., "end": ...}}); None where not set."""
    where = task
    if "start" not in task and "end" not in task:  # 4.x
        status = task.get("status")
        body = next(iter(status.values())) if isinstance(status, dict) and len(status) == 1 else {}
        where = body if isinstance(body, dict) else {}
    return rfc3339(where.get("start")), rfc3339(where.get("end"))


def task_outcome(task: dict) -> JobStatus:
    """Map a task's status (3.x or 4.x encoding) to caseflow's outcome, with the task's times;
    UNREADABLE (for this task alone) when pueue says something caseflow does not know."""
    status = _outcome(task)
    if status.outcome == UNREADABLE:
        return status
    started, ended = task_times(task)
    return replace(
        status,
        started=started,
        ended=ended if status.outcome != RUNNING else None,
        waiting=status_name(task) in WAITING_STATES,
    )


def _outcome(task: dict) -> JobStatus:
    name = status_name(task)
    if name in RUNNING_STATES:
        body = task["status"].get(name) if isinstance(task["status"], dict) else None
        if name == "Stashed" and isinstance(body, dict) and body.get("enqueue_at"):
            return JobStatus(RUNNING, f"stashed until {body['enqueue_at']}")
        return JobStatus(RUNNING, name.lower())
    if name != "Done":
        return _unreadable(task, task.get("status"))
    result = done_result(task)
    if result == "Success":
        return JobStatus(SUCCESS, "exit code 0", 0)
    if isinstance(result, dict) and len(result) == 1:
        kind, value = next(iter(result.items()))
        if kind == "Failed" and isinstance(value, int):
            return JobStatus(FAILURE, f"job exited with code {value}", value)
        if kind == "FailedToSpawn":
            return JobStatus(FAILURE, f"pueue could not start the job: {value}")
    if result == "Killed":
        return JobStatus(FAILURE, "killed (by pueue kill, pueue reset or a pueue daemon restart)")
    if result == "Errored":
        return JobStatus(FAILURE, "pueue reports the task as errored")
    if result == "DependencyFailed":
        return JobStatus(FAILURE, "a task it depended on failed")
    return _unreadable(task, result)


def by_exit_code(code: int, why: str) -> JobStatus:
    if code == 0:
        return JobStatus(SUCCESS, f"exit code 0 ({why})", 0)
    return JobStatus(FAILURE, f"job exited with code {code} ({why})", code)


def parse_poll(text: str, count: int) -> tuple[dict, list[tuple[str, int | str | None]]]:
    """The POLL script's output → (pueue's status, per job (processes, recorded exit code)):
    processes are "alive", "gone", "lost" (gone, and the daemon that started it no longer runs),
    "outlived" (gone, after a poll had seen them alive under a later daemon: the job's end, not
    a loss) or "none" (no start record of the label);
    the exit code is None without a record of this label, the record's text when it is not an
    exit code. BadOutput when pueue's part cannot be read or the answer ended early."""
    lines = text.split("\n")
    if "@@caseflow status" not in lines:
        raise BadOutput(f"pueue status printed something that is not JSON: {quote_start(text)}")
    i = lines.index("@@caseflow status") + 1
    body = []
    while i < len(lines) and not lines[i].startswith("@@caseflow "):
        body.append(lines[i])
        i += 1
    data = parse_status("\n".join(body))
    procs: dict[int, str] = {}
    codes: dict[int, int | str] = {}
    live, ps_failed, ended, orphaned, outlived = set(), False, False, set(), set()
    for line in lines[i:]:
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["@@caseflow", "job"] and parts[2].isdigit():
            procs[int(parts[2])] = parts[3]
        elif len(parts) >= 3 and parts[:2] == ["@@caseflow", "exit"] and parts[2].isdigit():
            said = line.split(" ", 3)[3] if len(parts) > 3 else ""
            codes[int(parts[2])] = int(said) if re.fullmatch(r"-?\d{1,9}", said) else said
        elif len(parts) == 3 and parts[:2] == ["@@caseflow", "live"]:
            live.add(parts[2])
        elif parts[:2] == ["@@caseflow", "daemon"] and parts[3:] == ["gone"] and parts[2].isdigit():
            orphaned.add(int(parts[2]))
        elif len(parts) == 3 and parts[:2] == ["@@caseflow", "outlived"] and parts[2].isdigit():
            outlived.add(int(parts[2]))
        ps_failed = ps_failed or line == "@@caseflow ps-failed"
        ended = ended or line == "@@caseflow end"
    if not ended:
        raise BadOutput(f"the answer to the poll ended early: {quote_start(text[-120:])}")
    records = []
    for n in range(count):
        seen = procs.get(n, "none")
        if seen.isdigit():  # `kill -0` found the group: alive unless all of it are zombies
            seen = "alive" if ps_failed or seen in live else "gone"
        if seen == "gone" and n in outlived:
            seen = "outlived"
        elif seen == "gone" and n in orphaned:
            seen = "lost"
        records.append((seen, codes.get(n)))
    return data, records
