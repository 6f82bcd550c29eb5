"""The `pueue` backend: jobs go to the pueue daemon on the GPU host.

Every call is one `pueue` command through the transport (argument lists, quoted
there). The contract (pueue 3.x and 4.x) is in shared/pueue/FORMAT.md:

- Task ids are reused by pueue after `clean`/`remove`, so a task is the case's
  only if its label matches; submit first looks for a task with the case's label
  and adopts it (the daemon may have died between `pueue add` and the store's
  commit), so a case never gets two tasks.
- Polling is one `pueue status --json` for all running cases of the host.
- A group that pueue paused (it does after its daemon restarts) is reported,
  never waited on silently.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from typing import Sequence

from ..errors import PermanentError, TransientError
from . import FAILURE, NOT_FOUND, RUNNING, SUCCESS, JobRef, JobSpec, JobStatus, QueueBackend

log = logging.getLogger("caseflow.pueue")

RUNNING_STATES = ("Queued", "Stashed", "Running", "Paused", "Locked")


class BadOutput(TransientError):
    """pueue printed something caseflow cannot read. Often a truncated read after a
    dropped connection, so it is retried a few times; then the case fails, quoting it."""
    max_attempts = 3


def _quote_start(text: str, n: int = 120) -> str:
    text = text.strip().replace("\n", "\\n")
    return repr(text[:n] + ("..." if len(text) > n else ""))


def parse_status(text: str) -> dict:
    """`pueue status --json` output → {"tasks": {id: task}, "groups": {...}}; BadOutput if not."""
    try:
        data = json.loads(text)
    except ValueError:
        raise BadOutput(f"pueue status printed something that is not JSON: "
                        f"{_quote_start(text)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) or \
            not isinstance(data.get("groups", {}), dict):
        raise BadOutput(f"pueue status JSON has no tasks map: {_quote_start(text)}")
    return data


def task_outcome(task: dict) -> JobStatus:
    """Map a task's status (3.x or 4.x encoding) to caseflow's outcome."""
    status = task.get("status")
    if isinstance(status, str):  # 3.x: "Queued", "Running", "Paused", "Locked"
        name, body = status, None
    elif isinstance(status, dict) and len(status) == 1:
        name, body = next(iter(status.items()))
    else:
        raise BadOutput(f"unknown pueue task status {_quote_start(json.dumps(status))}")
    if name in RUNNING_STATES:
        return JobStatus(RUNNING, name.lower())
    if name != "Done":
        raise BadOutput(f"unknown pueue task status {name!r}")
    result = body.get("result") if isinstance(body, dict) and "result" in body else body
    if result == "Success":
        return JobStatus(SUCCESS, "exit code 0", 0)
    if isinstance(result, dict) and len(result) == 1:
        kind, value = next(iter(result.items()))
        if kind == "Failed" and isinstance(value, int):
            return JobStatus(FAILURE, f"job exited with code {value}", value)
        if kind == "FailedToSpawn":
            return JobStatus(FAILURE, f"pueue could not start the job: {value}")
    if result == "Killed":
        return JobStatus(FAILURE, "killed (by pueue kill or a pueue daemon restart)")
    if result == "Errored":
        return JobStatus(FAILURE, "pueue reports the task as errored")
    if result == "DependencyFailed":
        return JobStatus(FAILURE, "a task it depended on failed")
    raise BadOutput(f"unknown pueue result {_quote_start(json.dumps(result))}")


class PueueBackend(QueueBackend):
    def __init__(self, transport, groups, pueue: str = "pueue", manage_groups: bool = True):
        self.transport = transport
        self.groups = {g.name: g.slots for g in groups}
        self.pueue = pueue
        self.manage_groups = manage_groups
        self.version: str | None = None
        self._prepared_on: int | None = None  # the transport connection count it was done on
        self.paused_groups: set[str] = set()

    # -- plumbing ------------------------------------------------------------------------
    def _run(self, *args: str, env: dict | None = None):
        argv = [self.pueue, *args]
        if env:
            argv = ["env", *(f"{k}={v}" for k, v in sorted(env.items())), *argv]
        return self.transport.run(argv)

    def _connection_id(self) -> int:
        return getattr(self.transport, "connects", 0)

    def prepare(self) -> None:
        """Once per connection: detect pueue's version; create groups and set their slots."""
        if self._prepared_on == self._connection_id() and self.version:
            return
        res = self._run("--version")
        match = re.search(r"(\d+)\.(\d+)\.(\d+)", res.stdout)
        if res.returncode != 0 or not match:
            if res.returncode == 127 or "not found" in res.stderr:
                raise PermanentError(f"pueue is not installed on {self.transport.name} "
                                     f"(`{self.pueue} --version`: {res.stderr.strip()[:200]})")
            raise TransientError(f"`pueue --version` failed on {self.transport.name}: "
                                 f"{(res.stderr or res.stdout).strip()[:200]}")
        self.version = match.group(0)
        log.info("pueue %s on %s", self.version, self.transport.name)
        if self.manage_groups:
            self._manage_groups()
        self._prepared_on = self._connection_id()

    def _manage_groups(self) -> None:
        res = self._run("group", "--json")
        try:
            existing = json.loads(res.stdout) if res.returncode == 0 else None
        except ValueError:
            existing = None
        if not isinstance(existing, dict):
            existing = parse_status(self._run("status", "--json").stdout).get("groups", {})
        for name, slots in self.groups.items():
            if name not in existing:
                res = self._run("group", "add", name)
                if res.returncode != 0 and "already exists" not in res.stdout + res.stderr:
                    raise TransientError(f"`pueue group add {name}` failed: "
                                         f"{(res.stderr or res.stdout).strip()[:200]}")
                log.info("created pueue group %s on %s", name, self.transport.name)
            current = existing.get(name, {}).get("parallel_tasks")
            if current != slots:
                res = self._run("parallel", str(slots), "-g", name)
                if res.returncode != 0:
                    raise TransientError(f"`pueue parallel {slots} -g {name}` failed: "
                                         f"{(res.stderr or res.stdout).strip()[:200]}")
                log.info("pueue group %s on %s: parallel tasks %s -> %s", name,
                         self.transport.name, current, slots)

    def _status(self) -> dict:
        res = self._run("status", "--json")
        if res.returncode != 0:
            raise TransientError(f"`pueue status` failed on {self.transport.name} (exit "
                                 f"{res.returncode}): {(res.stderr or res.stdout).strip()[:200]}")
        data = parse_status(res.stdout)
        self._note_groups(data.get("groups", {}))
        return data

    def _note_groups(self, groups: dict) -> None:
        paused = {name for name, g in groups.items()
                  if isinstance(g, dict) and g.get("status") == "Paused" and name in self.groups}
        for name in sorted(paused - self.paused_groups):
            log.warning("pueue group %s on %s is PAUSED; its queued tasks wait until someone "
                        "runs `pueue start -g %s` (pueue pauses groups after its daemon restarts)",
                        name, self.transport.name, name)
        for name in sorted(self.paused_groups - paused):
            log.info("pueue group %s on %s runs again", name, self.transport.name)
        self.paused_groups = paused

    def notice(self) -> str | None:
        if not self.paused_groups:
            return None
        names = ", ".join(sorted(self.paused_groups))
        return (f"pueue group(s) {names} PAUSED: queued tasks wait until `pueue start -g NAME` "
                "(pueue pauses groups with queued tasks when its daemon restarts)")

    @staticmethod
    def _find_label(tasks: dict, label: str) -> str | None:
        for tid, task in tasks.items():
            if isinstance(task, dict) and task.get("label") == label:
                return str(tid)
        return None

    # -- the port ------------------------------------------------------------------------
    def submit(self, job: JobSpec) -> str:
        self.prepare()
        adopted = self._find_label(self._status()["tasks"], job.label)
        if adopted is not None:
            log.info("case %s: adopted pueue task %s (label %s) instead of adding another",
                     job.case_id, adopted, job.label)
            return adopted
        command = job.command if isinstance(job.command, str) else shlex.join(job.command)
        args = ["add", "-p", "-g", job.group, "-l", job.label, "-w", job.remote_path]
        if job.priority:
            args += ["-o", str(job.priority)]
        res = self._run(*args, "--", command, env=job.env)
        task_id = res.stdout.strip()
        if res.returncode == 0 and task_id.isdigit():
            return task_id
        message = (res.stderr.strip() or res.stdout.strip())[:300]
        if res.returncode == 0:
            raise BadOutput(f"`pueue add -p` printed no task id: {_quote_start(res.stdout)}")
        if "doesn't exist" in message or "does not exist" in message or \
                "No such file" in message or "working directory" in message.lower():
            raise PermanentError(f"pueue refused the job: {message}")
        raise TransientError(f"`pueue add` failed (exit {res.returncode}): {message}")

    def status(self, jobs: Sequence[JobRef]) -> dict[int, JobStatus]:
        if not jobs:
            return {}
        self.prepare()
        data = self._status()
        tasks = data["tasks"]
        out: dict[int, JobStatus] = {}
        for job in jobs:
            task = tasks.get(str(job.task_id))
            if not isinstance(task, dict) or task.get("label") != job.label:
                out[job.case_id] = JobStatus(
                    NOT_FOUND, f"pueue no longer knows task {job.task_id} with label "
                               f"{job.label} (cleaned, removed, or the pueue state was lost)")
                continue
            status = task_outcome(task)
            group = task.get("group")
            if status.outcome == RUNNING and group in self.paused_groups:
                status = JobStatus(RUNNING, f"{status.detail}; pueue group {group} is PAUSED")
            out[job.case_id] = status
        return out

    def cancel(self, job: JobRef) -> None:
        self.prepare()
        tasks = self._status()["tasks"]
        task = tasks.get(str(job.task_id))
        if not isinstance(task, dict) or task.get("label") != job.label:
            return  # not ours (any more): nothing to stop
        outcome = task_outcome(task)
        if outcome.outcome != RUNNING:
            return
        verb = "kill" if outcome.detail in ("running", "paused") else "remove"
        res = self._run(verb, str(job.task_id))
        if res.returncode != 0:
            raise TransientError(f"`pueue {verb} {job.task_id}` failed: "
                                 f"{(res.stderr or res.stdout).strip()[:200]}")

    def job_log(self, job: JobRef) -> str | None:
        res = self._run("log", str(job.task_id), "--json", "--full")
        if res.returncode != 0:
            return None
        try:
            data = json.loads(res.stdout)
        except ValueError:
            return None
        entry = data.get(str(job.task_id)) if isinstance(data, dict) else None
        if not isinstance(entry, dict) or (entry.get("task") or {}).get("label") != job.label:
            return None
        output = entry.get("output")
        return output if isinstance(output, str) else None
