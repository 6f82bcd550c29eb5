"""The `pueue` backend: jobs go to the pueue daemon on the GPU host (pueue 3.x and 4.x).

Tested against real pueue 3.4.1 and 4.0.4; the contract is in shared/pueue/FORMAT.md.

- Task ids are reused by pueue after `clean`/`remove`/`reset`, so a task is the case's only if
  its label matches; submit first looks for a task with the case's label and adopts it (the
  daemon may have died between `pueue add` and the store's commit): a case never gets two tasks.
- The task runs caseflow's wrapper `.caseflow/pueue-job.sh` (no case data in it) with the job's
  command as its arguments. It records "LABEL PGID DAEMON CASEFLOW_JOB" in `.caseflow/pueue-job`
  when it starts (DAEMON: the pueued that started it) and "LABEL EXIT_CODE" in
  `.caseflow/pueue-exit` when the command ends, once the processes the command left (in its
  group or anywhere with its label: setsid) are gone (TERM, then KILL after 10 s: the slot is
  free only when nothing of the job runs), and writes the job's stdout
  and stderr to `.caseflow/job.log` as they are: `pueue log` cannot give a log that is not UTF-8
  (3.4.1 and 4.0.4 print an error in its place), so caseflow never asks pueue for the text.
  pueue starts every task as the leader of its own process group, so a SIGKILLed pueued leaves
  its tasks running, and the restarted daemon marks them Killed (or knows nothing of them when
  its state file was lost); a TERM ends the wrapper at once, and pueue marks the task Killed while
  a job that catches TERM may take its time to end. Then caseflow believes the records, not
  pueue: the case stays `running` ("pueue lost track of the task; waiting for its processes to
  end") while any process of the job is alive, so its GPU slot is not handed on, and ends by
  the exit code the job recorded. The job's processes are those whose environment holds
  CASEFLOW_JOB=LABEL (given to the task by `pueue add`), whatever their group: a child that left
  it (setsid) counts, and a group id reused by another program after a reboot does not. A job of
  an older wrapper (no CASEFLOW_JOB in its record), or a host without /proc, is followed by its
  process group.
- A job lost to the infrastructure: its group gone, no exit record, and the pueued that started
  it (recorded in the start record as pid and start time) no longer runs: the daemon was
  restarted under it, or the host rebooted (pueued stops its tasks on the way down). That is
  LOST (the engine runs the case again), whether the restarted daemon lists the task as Killed
  (3.4.1 and 4.0.4 do; neither starts it again, and a group with Queued tasks comes back
  PAUSED) or lost its state. A `pueue kill` or `pueue reset` leaves that daemon running: the
  job's end (FAILURE, NOT_FOUND), as is a job that wrote its exit code. So is the end of a job
  that had outlived a restart of pueued (a poll saw it alive while another pueued answered,
  and marked its folder `.caseflow/pueue-outlived`, so that a restart of caseflow keeps it):
  whoever killed it since did so under the new daemon; a reboot that takes it later cannot be
  told from that, and a person retries it.
- Cancel finds the task by its label and acts in the same remote command (scripts/pueue-cancel.sh):
  a stored id alone may name another case's task by then (a cancel repeated after a lost reply,
  the id reused after `clean`/`remove`), and a submit whose reply was lost left no id at all.
- Polling is one remote command for all running cases of the host: `pueue status --json`, then
  one line per job from those records.
- pueued not running is a problem of the host (HostError): no case fails, `caseflow status`
  shows "pueue daemon not running", and work goes on when it answers again.
- Groups are created with their parallel count (`group add NAME -p N`; 3.x creates groups
  asynchronously, so caseflow waits until the group is listed) on first contact and again before
  an `add` whenever the daemon lost them (a restart with its state file gone or unreadable).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..config.reader import Section
from ..errors import CONFIG, QUEUE_DOWN, HostError, PermanentError, TransientError
from ..transports.shell import script, source
from . import (
    LOG_TAIL_BYTES,
    LOST,
    NOT_FOUND,
    RUNNING,
    UNREADABLE,
    BackendAdapter,
    BackendConfig,
    JobRef,
    JobSpec,
    JobStatus,
    QueueBackend,
    job_env,
)
from .output import BadOutput, quote_start
from .pueue_groups import PueueGroups
from .pueue_status import (
    POLL,
    by_exit_code,
    done_result,
    parse_poll,
    parse_status,
    status_name,
    task_outcome,
)
from .scripted import NO_FOLDER, NO_ID, job_command

log = logging.getLogger("caseflow.pueue")

WRAPPER = ".caseflow/pueue-job.sh"
EXIT_RECORD = ".caseflow/pueue-exit"
LOG_FILE = ".caseflow/job.log"  # the job's stdout and stderr, as the wrapper wrote them

# The remote scripts: scripts/pueue-*.sh. The job wrapper (the same for every case) is written
# to the case folder as it is: the task's command execs it with LABEL, then the job's argv.
# pueue starts the task's shell as the leader of a new process group, so the wrapper's $$ is
# the group's id.
# It ends the processes the job left behind with `ours` (job-group.sh, put before it).
JOB_WRAPPER = source(__package__, "job-group.sh") + source(__package__, "pueue-job.sh")
SUBMIT = script(__package__, "pueue-submit.sh")
CANCEL = script(__package__, "pueue-cancel.sh", "pueue-client.sh", "job-group.sh", "pueue-kill.sh")
FIND = script(__package__, "pueue-find.sh", "pueue-client.sh")
LOG = script(__package__, "pueue-log.sh")

# pueued is not there ("Did you start it?"), or went away while the client shook hands with
# it (SIGKILLed between caseflow's status query and its add: "Connection reset by peer")
DAEMON_DOWN = re.compile(
    r"Did you start (it|the daemon)|Failed to receive version during "
    r"handshake|Connection reset by peer"
)
COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # pueue colours its errors, even without a terminal
LOST_TRACK = "pueue lost track of the task; waiting for its processes to end"


class DaemonNotRunning(HostError):
    """pueued does not answer on the host: its cases wait (none fails) and it is shown."""

    kind = QUEUE_DOWN


class PueueBackend(PueueGroups, QueueBackend):
    def __init__(
        self,
        transport,
        groups,
        pueue: str | Sequence[str] = "pueue",
        manage_groups: bool = True,
        sleep=time.sleep,
        clock=time.monotonic,
    ):
        self.transport = transport
        self.groups = {g.name: g.slots for g in groups}
        # the client's words (backend.pueue: `pueue -c /etc/pueue.yml`); a string is one word
        self.pueue: tuple[str, ...] = (pueue,) if isinstance(pueue, str) else tuple(pueue)
        self.manage_groups = manage_groups
        self.version: str | None = None
        self.major = 0
        self._prepared_on: int | None = None  # the transport connection count it was done on
        self._sleep, self._clock = sleep, clock
        self.paused_groups: set[str] = set()
        self._counts: dict[str, int] = {}  # of caseflow's tasks: stashed, paused, lost

    # -- plumbing ------------------------------------------------------------------------
    @property
    def client(self) -> str:
        """The client's command line, every word shell-quoted: what the remote scripts take as
        their first argument (they run it with `pq`, scripts/pueue-client.sh) and what a
        message shows."""
        return shlex.join(self.pueue)

    def _run(self, *args: str):
        return self._checked(self.transport.run([*self.pueue, *args]), args[0])

    def _checked(self, res, what: str):
        """`res`, unless it says that pueued is not running: then DaemonNotRunning."""
        text = COLOURS.sub("", f"{res.stdout}\n{res.stderr}")
        if res.returncode != 0 and DAEMON_DOWN.search(text):
            lines = [ln.strip() for ln in text.splitlines()]
            i = next(i for i, ln in enumerate(lines) if DAEMON_DOWN.search(ln))
            words = (
                re.sub(r"^\d+: ", "", lines[i]) + " " + (lines[i + 1] if i + 1 < len(lines) else "")
            )
            raise DaemonNotRunning(
                f"pueue daemon not running on {self.transport.name} "
                f"(`pueue {what}`: {words.strip()[:200]}); its cases wait "
                "until pueued answers. Start it on the host as the SSH user: `pueued -d`, or "
                "its service: `systemctl --user start pueued`"
            )
        return res

    @staticmethod
    def _error(res) -> str:
        out = "\n".join(ln for ln in res.stdout.splitlines() if not ln.startswith("@@caseflow"))
        return COLOURS.sub("", res.stderr.strip() or out.strip())[:300]

    def _connection_id(self) -> int:
        return getattr(self.transport, "connects", 0)

    def prepare(self) -> None:
        """Once per connection: detect pueue's version; create groups and set their slots."""
        if self._prepared_on == self._connection_id() and self.version:
            return
        res = self.transport.run([*self.pueue, "--version"])
        match = re.search(r"(\d+)\.(\d+)\.(\d+)", res.stdout)
        if res.returncode != 0 or not match:
            if res.returncode == 127 or "not found" in res.stderr:
                # the host's problem, not a case's: a case failed for it and kept its slot
                # while its stop could never find pueue (a review, issue 27)
                raise HostError(
                    f"pueue is not installed on {self.transport.name} "
                    f"(`{self.client} --version`: {res.stderr.strip()[:200]}); install it "
                    "there, or set backend.pueue to where it is",
                    kind=CONFIG,
                )
            raise TransientError(
                f"`{self.client} --version` failed on {self.transport.name}: {self._error(res)}"
            )
        self.version, self.major = match.group(0), int(match.group(1))
        log.info("pueue %s on %s", self.version, self.transport.name)
        if self.manage_groups:
            self._manage_groups(self._groups())
        self._prepared_on = self._connection_id()

    def probe(self) -> None:
        """The daemon answers (the engine asks this of a host whose work is paused)."""
        self.prepare()
        self._status()

    def _status(self) -> dict:
        res = self._run("status", "--json")
        if res.returncode != 0:
            raise TransientError(
                f"`pueue status` failed on {self.transport.name} (exit "
                f"{res.returncode}): {self._error(res)}"
            )
        return parse_status(res.stdout)

    def _poll(self, jobs: Sequence[JobRef]) -> tuple[dict, list[tuple[str, int | str | None]]]:
        args = [a for j in jobs for a in (j.label, j.remote_path or "/nonexistent")]
        res = self._checked(
            self.transport.run(["sh", "-c", POLL, "caseflow-pueue-poll", self.client, *args]),
            "status",
        )
        if res.returncode != 0:
            raise TransientError(
                f"`pueue status` failed on {self.transport.name} (exit "
                f"{res.returncode}): {self._error(res)}"
            )
        return parse_poll(res.stdout, len(jobs))

    @staticmethod
    def _find_label(tasks: dict, label: str) -> str | None:
        for tid, task in tasks.items():
            if isinstance(task, dict) and task.get("label") == label:
                return str(tid)
        return None

    # -- the port ------------------------------------------------------------------------
    def submit(self, job: JobSpec) -> str:
        self.prepare()
        data = self._status()
        adopted = self._find_label(data["tasks"], job.label)
        if adopted is not None:
            log.info(
                "case %s: adopted pueue task %s (label %s) instead of adding another",
                job.case_id,
                adopted,
                job.label,
            )
            return adopted
        group = data.get("groups", {}).get(job.group)
        if (
            self.manage_groups
            and job.group in self.groups
            and (
                not isinstance(group, dict) or group.get("parallel_tasks") != self.groups[job.group]
            )
        ):
            log.warning(
                "pueue on %s lost group %s or its parallel count (a restart without "
                "its state?): setting the groups up again",
                self.transport.name,
                job.group,
            )
            self._manage_groups(data.get("groups", {}))
        command = "exec " + shlex.join(["sh", WRAPPER, job.label, *job_command(job)])
        add = [*self.pueue, "add", "-p", "-g", job.group, "-l", job.label, "-w", job.remote_path]
        if job.priority:  # `-o -5` is refused (clap reads -5 as an option); `=` is not
            add.append(f"--priority={job.priority}")
        # CASEFLOW_JOB: the job's processes are told by it wherever they go (a child may leave
        # the task's group), and a group id reused after a reboot is not taken for the job
        env = [f"{k}={v}" for k, v in sorted({**job_env(job), "CASEFLOW_JOB": job.label}.items())]
        # sent once: a lost reply is a transient error, and the step's next try finds the
        # task by its label (the script looks first) instead of adding a second one
        res = self._checked(
            self.transport.run_once(
                [
                    "sh",
                    "-c",
                    SUBMIT,
                    "caseflow-pueue-add",
                    job.remote_path,
                    job.label,
                    JOB_WRAPPER,
                    "env",
                    *env,
                    *add,
                    "--",
                    command,
                ]
            ),
            "add",
        )
        last = res.stdout.strip().splitlines()[-1:] or [""]
        verb, _, task_id = last[0].partition(" ")
        if res.returncode == 0 and verb in ("added", "adopted") and task_id.isdigit():
            if verb == "adopted":
                log.warning(
                    "case %s: pueue no longer lists task %s (label %s) that caseflow "
                    "added before; its records in the case folder decide",
                    job.case_id,
                    task_id,
                    job.label,
                )
            return task_id
        message = self._error(res)
        if res.returncode == NO_FOLDER:
            raise PermanentError(f"the uploaded case folder is missing on {self.transport.name}")
        if res.returncode == NO_ID:
            raise BadOutput(f"`pueue add -p` printed no task id: {quote_start(res.stdout)}")
        if (
            "doesn't exist" in message
            or "does not exist" in message
            or "No such file" in message
            or "working directory" in message.lower()
        ):
            raise PermanentError(f"pueue refused the job: {message}")
        raise TransientError(f"`pueue add` failed (exit {res.returncode}): {message}")

    @staticmethod
    def _labels(tasks: dict) -> dict[str, str]:
        """label -> task id (the first with that label), over all of pueue's tasks: once per
        poll, not once per job."""
        out: dict[str, str] = {}
        for tid, task in tasks.items():
            if isinstance(task, dict) and isinstance(task.get("label"), str):
                out.setdefault(task["label"], str(tid))
        return out

    @staticmethod
    def _entry(job: JobRef, tasks: dict, labels: dict[str, str]) -> tuple[str, object]:
        """The job's task id and pueue's entry: by its stored id while that entry is the job's
        (or in a form caseflow cannot read), else by its label (a job whose id was never
        stored: the reply to its submit was lost). (the stored id, None) when pueue lists
        neither."""
        task = tasks.get(str(job.task_id)) if job.task_id else None
        if task is not None and (not isinstance(task, dict) or task.get("label") == job.label):
            return job.task_id, task
        found = labels.get(job.label)
        if found is not None:
            return found, tasks[found]
        return job.task_id, task

    def _judge(
        self, job: JobRef, tid: str, task, record: tuple[str, int | str | None]
    ) -> JobStatus:
        """The job's status from pueue's entry and the job's own records. The job has ended
        only once no process of it is alive (parse_poll), whatever pueue says: pueue marks a
        task done when the wrapper (its process group's leader) ends, and a TERM ends the
        wrapper at once while a job that catches TERM may take seconds to end."""
        procs, code = record
        name = f"task {tid}" if tid else f"the task labelled {job.label}"
        if task is not None and (not isinstance(task, dict) or "label" not in task):
            return JobStatus(
                UNREADABLE,
                f"pueue reports {name} in a form caseflow "
                f"does not know: {quote_start(json.dumps(task))}",
            )
        ours = task is not None and task["label"] == job.label
        # when pueue started the task: still the job's start when its records decide how it
        # ended (pueue's end is then its wrapper's, not the job's: that end is the poll's)
        started = None
        if task is not None and ours:
            status = task_outcome(task)
            if status_name(task) != "Done":
                return status
            started = status.started
            killed = done_result(task) == "Killed"
            if procs == "alive":
                said = "Killed" if killed else status.detail
                return JobStatus(
                    RUNNING,
                    f"{LOST_TRACK} (pueue says the task ended: {said}; its processes live on)",
                    started=started,
                )
            if not killed:
                return status
            why = "pueue marked the task Killed: `pueue kill`, a reset or a daemon restart"
        else:
            why = f"pueue no longer knows {name}"
        if procs == "alive":
            return JobStatus(RUNNING, f"{LOST_TRACK} ({why})", started=started)
        if isinstance(code, str):  # it names the job, but what it says is no exit code
            return JobStatus(
                UNREADABLE,
                f"the job's own exit record {EXIT_RECORD} says "
                f"{quote_start(code)}, not an exit code ({why})",
            )
        if code is not None:
            return replace(by_exit_code(code, f"the job's own record; {why}"), started=started)
        if procs == "lost":
            # no exit code, no process left, and the pueued that started it is gone: the
            # daemon was restarted under it (a reboot stops it too); a `pueue kill` or reset
            # leaves the daemon running and stays the job's end (FAILURE, NOT_FOUND)
            return JobStatus(
                LOST,
                f"its processes on {self.transport.name} are gone without an exit code and "
                "the pueue daemon that started it no longer runs (pueued was restarted or "
                f"the host rebooted; {why})",
                started=started,
            )
        # its end under a live daemon (`pueue kill`, reset), or after it had outlived a
        # restart of pueued: someone killed it since (a later reboot cannot be told from
        # that: a person retries it)
        after = (
            f" after it had outlived a restart of pueued (a person's kill, or a later "
            f"reboot of {self.transport.name}: retry it then)"
            if procs == "outlived"
            else ""
        )
        if ours:
            return replace(status, detail=status.detail + after) if after else status
        return JobStatus(
            NOT_FOUND,
            f"pueue no longer knows {name} with label "
            f"{job.label} (cleaned, removed, reset, or the pueue state "
            f"was lost){after}",
        )

    def status(self, jobs: Sequence[JobRef]) -> dict[int, JobStatus]:
        if not jobs:
            return {}
        self.prepare()
        data, records = self._poll(jobs)
        tasks = data["tasks"]
        paused = {
            name
            for name, g in data.get("groups", {}).items()
            if isinstance(g, dict) and g.get("status") == "Paused"
        }
        out: dict[int, JobStatus] = {}
        counts = {"stashed": 0, "paused": 0, "lost": 0}
        labels = self._labels(tasks)
        for job, record in zip(jobs, records, strict=True):  # a record per job (parse_poll)
            tid, task = self._entry(job, tasks, labels)
            status = self._judge(job, tid, task, record)
            group = task.get("group") if isinstance(task, dict) else None
            if status.outcome == RUNNING and status.detail.startswith(LOST_TRACK):
                counts["lost"] += 1
            elif status.outcome == RUNNING:
                if status.detail.startswith("stashed"):
                    counts["stashed"] += 1
                elif status.detail == "paused" and group not in paused:
                    counts["paused"] += 1  # paused on its own (`pueue pause ID`)
                if group in paused:
                    status = replace(
                        status, detail=f"{status.detail}; pueue group {group} is PAUSED"
                    )
            out[job.case_id] = status
        self._note(data.get("groups", {}), counts)
        return out

    def cancel(self, job: JobRef, force: bool = False) -> None:
        """Stop the job: SIGTERM to its processes (`pueue kill -s sigterm`: a plain `pueue
        kill` is SIGKILL to the task's process group in 3.4.1 and 4.0.4), or with `force`
        SIGKILL to its whole process group; a task still waiting is removed from the queue.
        One remote command (scripts/pueue-cancel.sh) finds the task by its label and acts on
        it: it is safe to repeat (the transport does, after a lost reply), it never touches a
        task that got the id meanwhile, and it stops a job whose id was never stored. The
        processes pueue no longer follows (its daemon lost the task, or marked it ended while
        they live on) are signalled from the wrapper's record. The job has ended once
        `status` no longer reports it RUNNING."""
        res = self._checked(
            self.transport.run(
                [
                    "sh",
                    "-c",
                    CANCEL,
                    "caseflow-pueue-cancel",
                    self.client,
                    job.label,
                    job.remote_path or "/nonexistent",
                    "kill" if force else "term",
                ]
            ),
            "kill",
        )
        done = [ln[len("@@caseflow ") :] for ln in res.stdout.splitlines() if ln.startswith("@@")]
        if res.returncode != 0 or "end" not in done:
            raise TransientError(
                f"stopping the job {job.label} on {self.transport.name} failed (exit "
                f"{res.returncode}): {self._error(res)}"
            )
        if done != ["end"]:
            log.info(
                "case %s: %s the job %s: %s",
                job.case_id,
                "killed" if force else "stopped",
                job.label,
                "; ".join(done[:-1]),
            )

    def find(self, job: JobRef) -> str | None:
        """The id of the task added under `job.label` (a submit whose reply was lost): pueue's
        task of that label, else the submit's record in the case folder (pueue may have
        forgotten the task, its processes may run on). None when neither exists."""
        res = self._checked(
            self.transport.run(
                [
                    "sh",
                    "-c",
                    FIND,
                    "caseflow-pueue-find",
                    self.client,
                    job.label,
                    job.remote_path or "/nonexistent",
                ]
            ),
            "status",
        )
        if res.returncode != 0:
            raise TransientError(
                f"`pueue status` failed on {self.transport.name} (exit "
                f"{res.returncode}): {self._error(res)}"
            )
        lines = res.stdout.split("\n")
        if "@@caseflow status" not in lines or "@@caseflow end" not in lines:
            raise BadOutput(f"the answer to the search ended early: {quote_start(res.stdout)}")
        start = lines.index("@@caseflow status") + 1
        end = next(i for i in range(start, len(lines)) if lines[i].startswith("@@caseflow "))
        found = self._find_label(parse_status("\n".join(lines[start:end]))["tasks"], job.label)
        if found is not None:
            return found
        for line in lines[end:]:
            parts = line.split()
            if parts[:2] == ["@@caseflow", "record"] and len(parts) == 3 and parts[2].isdigit():
                return parts[2]
        return None

    def job_log(self, job: JobRef) -> str | None:
        """The job's output: the last LOG_TAIL_BYTES of `.caseflow/job.log`, byte for byte
        (sent as hexadecimal, read with surrogateescape: `text.encode("utf-8",
        "surrogateescape")` gives the job's bytes back; only a display replaces what is not
        UTF-8). A job started by an older wrapper, without that file: `pueue log`, unless it
        says that it could not read the log."""
        res = self.transport.run(
            [
                "sh",
                "-c",
                LOG,
                "caseflow-pueue-log",
                job.remote_path or "/nonexistent",
                job.label,
                str(LOG_TAIL_BYTES),
            ]
        )
        if res.returncode == 0:
            try:
                return bytes.fromhex(res.stdout).decode("utf-8", "surrogateescape")
            except ValueError:
                raise BadOutput(
                    f"the job's log came as something that is not od's hexadecimal: "
                    f"{quote_start(res.stdout)}"
                ) from None
        if res.returncode != 3:
            raise TransientError(
                f"reading the log of {job.label} on {self.transport.name} failed (exit "
                f"{res.returncode}): {self._error(res)}"
            )
        return self._pueue_log(job) if job.task_id else None

    def _pueue_log(self, job: JobRef) -> str | None:
        """`pueue log ID --json --full`, if the task is still the job's and pueue could read
        the log (its output of a log that is not UTF-8 is an error message: not the log)."""
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
        if not isinstance(output, str) or output.startswith("(Pueue error)"):
            if isinstance(output, str):
                log.warning("case %s: pueue cannot give the job's log: %s", job.case_id, output)
            return None
        return output

    def log_file(self, job: JobRef) -> str | None:
        return LOG_FILE


@dataclass(frozen=True)
class PueueConfig(BackendConfig):
    """`kind: pueue`."""

    # the pueue client on the host: its words, e.g. ("pueue", "-c", "/etc/pueue.yml")
    pueue: tuple[str, ...] = ("pueue",)
    manage_groups: bool = True  # create the groups and set their parallel tasks to the slots


def _command_words(text: str) -> str | None:
    """What is wrong with `backend.pueue` as a command line, or None."""
    try:
        words = shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        return f"not a command line: {exc}"
    return None if words else "is empty: the pueue client, e.g. `pueue` or `pueue -c FILE`"


def read_config(section: Section) -> PueueConfig:
    br, d = section.reader, PueueConfig
    # a command with arguments (`pueue -c /etc/pueue.yml`: a pueued of its own config), split
    # here as a shell would; each word is quoted again where it reaches the remote shell
    pueue = br.get("pueue", str, shlex.join(d.pueue), check=_command_words)
    return PueueConfig(
        **section.core,
        pueue=tuple(shlex.split(pueue)),
        manage_groups=br.get("manage_groups", bool, d.manage_groups),
    )


ADAPTER = BackendAdapter(
    config=PueueConfig,
    read=read_config,
    open=lambda host, transport: PueueBackend(
        transport, host.groups, pueue=host.backend.pueue, manage_groups=host.backend.manage_groups
    ),
)
