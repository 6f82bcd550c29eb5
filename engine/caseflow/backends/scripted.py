"""A base for queue backends driven by remote `sh` scripts: a scheduler is three commands, each
with the parser of its answer (as aiida-core's schedulers pair `_get_submit_command` with
`_parse_submit_output`):

- a submit command (`submit_command`) whose script prints `submitted ID` or `adopted ID` on its
  last line, or exits with one of the codes below (`submit_error` says what each means);
- a poll command for many jobs (`poll_command`), its answer read as a whole (`read_poll`,
  BadOutput when it is not the script's) and then job by job (`job_status`: a BadOutput there
  is that job's problem alone, UNREADABLE);
- a cancel command (`cancel_command`), which checks itself that the job is still the case's.

The base runs them through the transport (the submit with `run_once`: never repeated, the step
tries again later and the script adopts what the first try left), owns the job's command line
(`job_argv`) and the record of a submitted job in the case folder (`find`, FIND_RECORD), and
reads the job's log from a file in the case folder (`LOG`). Every command is `sh -c SCRIPT NAME
ARG...` (`script_argv`): each variable part is a positional parameter, nothing from a case name
or path is ever parsed by a shell.

The backends on it: slurm.py and gridengine.py; how to write one is in docs/backends.md
("Adding a scheduler on the base").
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar

from ..errors import CONFIG, HostError, PermanentError, TransientError
from ..transports import RunResult, Transport
from . import (
    LOG_TAIL_BYTES,
    NOT_FOUND,
    UNREADABLE,
    JobRef,
    JobSpec,
    JobStatus,
    QueueBackend,
    find_record,
    job_env,
)
from .output import BadOutput, quote_start

log = logging.getLogger("caseflow.backends")

# The exit codes of the submit scripts (scripts/*-submit.sh, *-launch.sh), each with its meaning:
NO_ID = 94  # the queue's submit command succeeded but printed no job id caseflow can read
REFUSED = 95  # the queue's submit command failed; its message is on stderr
QUEUE_UNKNOWN = 96  # the queue could not be asked whether the case has a job already
NO_FOLDER = 97  # the uploaded case folder is missing
NO_BOOKKEEPING = 98  # caseflow's files in <case folder>/.caseflow could not be written
NOT_INSTALLED = 127  # the shell's own: a command (the queue's tools) was not found

# The poll scripts' answer: sections, each after a line "@@caseflow HEAD...", the last "end"
SECTION = "@@caseflow "


def script_argv(script: str, name: str, *args: str) -> list[str]:
    """The argv that runs `script` with `sh`: `name` is its $0 (what `ps` shows, and how a
    test tells one command from another), `args` its positional parameters."""
    return ["sh", "-c", script, name, *args]


def job_command(job: JobSpec) -> list[str]:
    """The job's command as an argv (a string runs with `sh -c`)."""
    return ["sh", "-c", job.command] if isinstance(job.command, str) else list(job.command)


def job_argv(job: JobSpec, *, device: bool = True, env: dict[str, str] | None = None) -> list[str]:
    """The job's command line `env NAME=VALUE... COMMAND...`: its environment (`job_env`: with
    CUDA_VISIBLE_DEVICES for the slot's device, unless `device` is False, where the queue sets
    it from the GPUs it allocated; and `env`, the backend's own) and its command."""
    names = {**(job_env(job) if device else job.env), **(env or {})}
    return ["env", *(f"{k}={v}" for k, v in sorted(names.items())), *job_command(job)]


def short(text: str, n: int = 300) -> str:
    """`text` on one line, at most `n` characters: a message quoted in an error."""
    text = " ".join(text.split())
    return text[:n] + ("..." if len(text) > n else "")


def sections(text: str, what: str) -> list[tuple[list[str], list[str]]]:
    """A poll script's answer as (head words, body lines) per section; BadOutput when it did
    not reach its last line ("@@caseflow end": a read cut short, or not the script's)."""
    out: list[tuple[list[str], list[str]]] = []
    for line in text.splitlines():
        if line.startswith(SECTION):
            out.append((line[len(SECTION) :].split(" "), []))
        elif out:
            out[-1][1].append(line)
    if not out or out[-1][0] != ["end"]:
        raise BadOutput(f"the {what} poll's output is incomplete: {quote_start(text)}")
    return out


P = TypeVar("P")  # what a backend's poll answer is, read as a whole (its `read_poll`)


class ScriptedBackend(QueueBackend, Generic[P]):
    """A queue driven by remote scripts; a subclass gives the commands and their parsers."""

    queue = "the queue"  # its name in messages ("Grid Engine")
    RECORD = ""  # <case folder>/.caseflow/RECORD: "LABEL ID" of the job submitted (FIND_RECORD)
    LOG = ""  # the job's stdout and stderr, relative to the case folder ("" when none)
    # words of a refused submit (REFUSED) that make it worth trying again later (the queue's
    # controller down or busy); any other refusal fails the case with the queue's message
    TRANSIENT_REFUSALS: tuple[str, ...] = ()
    QUEUE_TOOLS: tuple[str, ...] = ()  # the queue's own commands (the host's probe asks)

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def probe(self) -> None:
        """The queue's commands are on the host. A host paused because a submit found them
        missing (NOT_INSTALLED) is resumed only once they are there: a probe that looked at
        nothing ended that pause at once, and cases were sent there again (a review)."""
        if not self.QUEUE_TOOLS:
            return
        res = self.transport.run(
            [
                "sh",
                "-c",
                'for t; do command -v "$t" >/dev/null 2>&1 || printf "%s\\n" "$t"; done',
                "probe",
                *self.QUEUE_TOOLS,
            ],
            timeout=30,
        )
        missing = res.stdout.split() if res.returncode == 0 else []
        if missing:
            raise HostError(
                f"{self.queue}'s commands are missing on {self.transport.name}: "
                f"{', '.join(missing)}; install them, or put them on the SSH user's PATH",
                kind=CONFIG,
            )

    # -- what a backend gives ------------------------------------------------------------
    @abstractmethod
    def submit_command(self, job: JobSpec) -> list[str]:
        """The argv that submits the job, or adopts the case's job submitted before."""

    @abstractmethod
    def poll_command(self, jobs: Sequence[JobRef]) -> list[str]:
        """The argv of one command that asks about all `jobs` (their ids are `valid_id`)."""

    @abstractmethod
    def read_poll(self, res: RunResult, jobs: Sequence[JobRef]) -> P:
        """The poll's answer read as a whole; BadOutput (or TransientError) when it is not
        the script's, so that no job can be judged."""

    @abstractmethod
    def job_status(self, poll: P, job: JobRef) -> JobStatus:
        """One job's status from the poll's answer; BadOutput when its part of the answer
        cannot be read (the job alone is UNREADABLE)."""

    @abstractmethod
    def cancel_command(self, job: JobRef, force: bool) -> list[str]:
        """The argv that stops the job if it is still the case's (it exits 0 when the job
        has ended or is another's)."""

    def valid_id(self, task_id: str) -> bool:
        """Whether `task_id` is an id of this queue (others are not asked about)."""
        return task_id.isdigit()

    def polled(self, jobs: Sequence[JobRef], poll: P) -> None:  # noqa: B027 (optional hook)
        """Called after each poll with its answer (a backend keeps what `notice` says)."""

    # -- submit --------------------------------------------------------------------------
    def submit(self, job: JobSpec) -> str:
        res = self.transport.run_once(self.submit_command(job))
        lines = res.stdout.strip().splitlines()  # the last line: a login shell may chatter
        words = lines[-1].split() if lines else []
        if (
            res.returncode == 0
            and len(words) == 2
            and words[0] in ("submitted", "adopted")
            and self.valid_id(words[1])
        ):
            if words[0] == "adopted":
                log.info(
                    "case %s: adopted %s job %s (%s) instead of submitting another",
                    job.case_id,
                    self.queue,
                    words[1],
                    job.label,
                )
            return words[1]
        raise self.submit_error(res)

    def submit_error(self, res: RunResult) -> Exception:
        """What a submit that gave no job id means, by the script's exit code."""
        where, message = self.transport.name, short(res.stderr or res.stdout)
        code = res.returncode
        if code == NO_FOLDER:
            return PermanentError(f"the uploaded case folder is missing on {where}")
        if code == NOT_INSTALLED:  # the host's problem, not the case's: it pauses
            return HostError(
                f"{self.queue}'s commands are missing on {where}: {message}; install them, or "
                "put them on the SSH user's PATH",
                kind=CONFIG,
            )
        if code == NO_BOOKKEEPING:
            return TransientError(f"writing caseflow's files in the case folder failed: {message}")
        if code == QUEUE_UNKNOWN:
            return TransientError(
                f"asking {self.queue} on {where} for the case's job failed, so it is not known "
                f"whether the case has one already: {message}"
            )
        if code == REFUSED:
            if any(t.lower() in message.lower() for t in self.TRANSIENT_REFUSALS):
                return TransientError(f"submitting to {self.queue} failed: {message}")
            return PermanentError(f"{self.queue} refused the job: {message}")
        if code in (0, NO_ID):
            return BadOutput(
                f"submitting to {self.queue} printed no job id: "
                f"{quote_start(res.stdout + res.stderr)}"
            )
        return TransientError(f"submitting to {self.queue} failed (exit {code}): {message}")

    # -- status --------------------------------------------------------------------------
    def status(self, jobs: Sequence[JobRef]) -> dict[int, JobStatus]:
        if not jobs:
            return {}
        out: dict[int, JobStatus] = {}
        asked = [j for j in jobs if self.valid_id(j.task_id)]
        for j in jobs:
            if not self.valid_id(j.task_id):
                out[j.case_id] = JobStatus(
                    NOT_FOUND, f"no {self.queue} job id recorded ({j.task_id!r})"
                )
        if not asked:
            return out
        res = self.transport.run(self.poll_command(asked))
        if res.returncode != 0:
            raise TransientError(
                f"the {self.queue} poll failed on {self.transport.name} (exit "
                f"{res.returncode}): {short(res.stderr or res.stdout)}"
            )
        poll = self.read_poll(res, asked)
        for job in asked:
            try:
                out[job.case_id] = self.job_status(poll, job)
            except BadOutput as exc:  # this job's problem alone
                out[job.case_id] = JobStatus(UNREADABLE, str(exc))
        self.polled(asked, poll)
        return out

    # -- cancel, find, log ---------------------------------------------------------------
    def cancel(self, job: JobRef, force: bool = False) -> None:
        """The engine finds a job whose id was never stored (`find`) before it cancels."""
        if not self.valid_id(job.task_id):
            return
        res = self.transport.run(self.cancel_command(job, force))
        if res.returncode != 0:
            raise TransientError(
                f"cancelling {self.queue} job {job.task_id} failed on {self.transport.name} "
                f"(exit {res.returncode}): {short(res.stderr or res.stdout)}"
            )

    def find(self, job: JobRef) -> str | None:
        """The job's id from the record the submit wrote in the case folder."""
        return find_record(self.transport, job, self.RECORD) if self.RECORD else None

    def job_log(self, job: JobRef) -> str | None:
        if not self.LOG:
            return None
        res = self.transport.run(
            ["tail", "-c", str(LOG_TAIL_BYTES), "--", f"{job.remote_path}/{self.LOG}"]
        )
        return res.stdout if res.returncode == 0 else None

    def log_file(self, job: JobRef) -> str | None:
        return self.LOG or None
