"""The queue backend port: submit a job, ask about many jobs in one call, cancel one.

Adapters build their commands as argument lists and run them through a
transport, so every backend works over every transport.

An adapter registers a `BackendAdapter` under its name in the entry point group
`caseflow.backends` (see caseflow.plugins): its settings (a `BackendConfig` subclass), how
they are read from a host's `backend:`, how the backend is made, the remote tools it needs.
Nothing else in caseflow names it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import plugins
from ..errors import TransientError
from ..transports import Transport

RUNNING, SUCCESS, FAILURE, NOT_FOUND = "running", "success", "failure", "not_found"
# What the queue said about one job could not be read (an entry in a form caseflow does not
# know, a Slurm job without an id, ...). It is that job's problem alone: the engine charges its
# case a transient attempt (`detail` is the reason) and judges every other job on its own entry.
UNREADABLE = "unreadable"
# The job did not fail, it was taken away by the infrastructure: its node failed, it was
# preempted, its host rebooted (its processes gone, no exit record). `detail` says by what, as
# a person reads it ("node gpu3 failed (Slurm NODE_FAIL)"). Given only when none of the job's
# processes can still run. The engine runs the case again as a new run, within
# `retry.infrastructure_reruns`; a job that exited non-zero, was cancelled or killed for its
# own limits is a FAILURE, never LOST.
LOST = "lost"
# what took a LOST job away, as a label of caseflow_reruns (bounded: never the detail itself)
LOST_CAUSES = ("preempted", "node_failed", "host_restarted", "processes_gone")


def lost_cause(detail: str) -> str:
    """The kind of a LOST job's cause (LOST_CAUSES), read from its detail: a backend names a
    preemption, a node's failure or a reboot (or restart) in so many words."""
    text = detail.lower()
    if "preempt" in text:
        return "preempted"
    if "node" in text and ("fail" in text or "boot" in text):
        return "node_failed"
    if "reboot" in text or "boot id" in text or "restart" in text:
        return "host_restarted"
    return "processes_gone"


@dataclass(frozen=True)
class JobSpec:
    """Everything a backend needs to start a case's job."""

    case_id: int
    label: str  # unique per case; lets a re-run find a job it already started
    remote_path: str  # the uploaded case folder, the job's working directory
    group: str
    command: tuple[str, ...] | str
    env: dict = field(default_factory=dict)
    priority: int = 0
    # The GPU(s) of the case's slot (its group's `devices`), or None. A backend that runs the
    # job where caseflow's slots are sets CUDA_VISIBLE_DEVICES from it (`job_env`); one whose
    # queue picks the GPUs itself (Slurm) leaves it out.
    device: str | None = None


def job_env(job: JobSpec) -> dict[str, str]:
    """The job's environment: `job.env`, and CUDA_VISIBLE_DEVICES for the slot's device."""
    return {**job.env, **({} if job.device is None else {"CUDA_VISIBLE_DEVICES": job.device})}


@dataclass(frozen=True)
class JobRef:
    """A submitted job, as the store remembers it."""

    case_id: int
    task_id: str
    label: str
    remote_path: str


@dataclass(frozen=True)
class JobStatus:
    outcome: str  # RUNNING, SUCCESS, FAILURE, NOT_FOUND, LOST or UNREADABLE
    detail: str = ""  # what a person should read (e.g. "exit code 3")
    exit_code: int | None = None
    # When the job started and ended on its host as the queue (or the job's wrapper) says, in
    # Unix time; None when it has not, or the queue does not say: caseflow then takes the poll
    # that first saw it running (not `waiting`), or saw it end (caseflow.durations). `waiting`:
    # RUNNING, but not started yet (pending in the queue, held). Answers about a job are
    # compared without them: the same answer at another moment carries other times.
    started: float | None = field(default=None, compare=False)
    ended: float | None = field(default=None, compare=False)
    waiting: bool = field(default=False, compare=False)


LOG_TAIL_BYTES = 1_000_000  # of a job's output, kept at most (its end)


class QueueBackend(ABC):
    @abstractmethod
    def submit(self, job: JobSpec) -> str:
        """Start the job (or find the one already started for job.label); return its task id."""

    @abstractmethod
    def status(self, jobs: Sequence[JobRef]) -> dict[int, JobStatus]:
        """The status of every given job, keyed by case id, in one remote call."""

    @abstractmethod
    def cancel(self, job: JobRef, force: bool = False) -> None:
        """Ask the job to stop (SIGTERM to all its processes, or the queue's own stop); with
        `force`, kill them (SIGKILL). No error when it has already ended. A job whose task id
        was never stored (`job.task_id` empty: the answer to its submit was lost) is found
        by its label. The engine then polls `status` until the job is no longer RUNNING: a
        backend reports RUNNING while any process of the job is alive, so that its GPU slot
        is never handed on while the job still runs on it."""

    def find(self, job: JobRef) -> str | None:
        """The task id of the job submitted under `job.label` into `job.remote_path`, if one
        was: a submit whose answer was lost has started a job the store does not know. None
        when no job was submitted under the label. A backend that cannot tell returns None
        only when it is sure (the engine then ends the case without stopping anything)."""
        return None

    def probe(self) -> None:  # noqa: B027 (an optional hook: by default the queue is fine)
        """Raise HostError (or TransientError) while the queue cannot take work although the
        host answers; the engine asks this before it resumes a host whose work is paused."""

    def notice(self) -> str | None:
        """What the queue said last that a person should know (e.g. a paused group)."""
        return None

    def job_log(self, job: JobRef) -> str | None:
        """The job's combined stdout and stderr, or None when it cannot be had."""
        return None

    def log_file(self, job: JobRef) -> str | None:
        """Where the job's combined output is, as a path relative to its case folder, when
        the backend keeps it in a file there (the file job_log reads); the engine then
        fetches its last LOG_TAIL_BYTES with the results, in one command. None: job_log
        asks the queue."""
        return None

    def check(self) -> list[tuple[bool, str]]:
        """For `caseflow check`: can the queue take work, as (ok, what a person reads) lines
        beyond the tools it needs; changes nothing on the host."""
        return []


@dataclass(frozen=True)
class BackendConfig:
    """A host's `backend:` settings: the keys every backend has. An adapter's settings are a
    subclass of it, with their own defaults (its `BackendAdapter.config`).

    `BackendConfig(kind=..., ...)` builds the settings of the adapter registered as `kind`,
    as `TransportConfig(...)` does for transports."""

    kind: str
    command: tuple[str, ...] | str  # the case's job: a shell string or an argument list

    def __new__(cls, *args: Any, **kwargs: Any) -> BackendConfig:
        if cls is BackendConfig:
            cls = adapter(kwargs["kind"] if "kind" in kwargs else args[0]).config
        return super().__new__(cls)


@dataclass(frozen=True)
class BackendAdapter:
    """What a queue backend registers under its name (entry point group `caseflow.backends`)."""

    config: type[BackendConfig]  # its settings
    open: Callable[[Any, Any], QueueBackend]  # (`config.HostConfig`, transport) -> backend
    # a `config.reader.Section` -> its settings; None: they are the core keys alone
    read: Callable[[Any], BackendConfig] | None = None
    tools: tuple[str, ...] = ()  # commands it runs on the host (caseflow check)
    # (reader of the host, `config.HostConfig`) -> None, raising the reader's error when the
    # host's other settings do not suit the backend (e.g. devices that Slurm picks itself)
    check_host: Callable[[Any, Any], None] | None = None


# Reads a backend's record of the job it submitted under a label (`LABEL ID` in
# <case folder>/.caseflow/<record>): $1 = case folder, $2 = record's name, $3 = label.
# Prints the id; exit 3: no record of that label.
FIND_RECORD = (
    'f=$1/.caseflow/$2; [ -r "$f" ] && read -r l id < "$f" && [ "$l" = "$3" ] || exit 3; echo "$id"'
)


def find_record(transport: Transport, job: JobRef, record: str) -> str | None:
    """The id a backend recorded in the case folder for `job.label` (FIND_RECORD)."""
    if not job.remote_path:
        return None
    res = transport.run(
        ["sh", "-c", FIND_RECORD, "caseflow-find", job.remote_path, record, job.label]
    )
    if res.returncode == 3:
        return None
    ids = res.stdout.split()
    if res.returncode != 0 or len(ids) != 1:
        raise TransientError(
            f"reading the record of job {job.label} failed (exit {res.returncode}): "
            f"{(res.stderr or res.stdout).strip()[:200]}"
        )
    return ids[0]


def adapter(kind: str) -> BackendAdapter:
    """The backend adapter registered as `kind`; ValueError when none is."""
    try:
        return plugins.load(plugins.BACKENDS, kind, BackendAdapter)
    except KeyError:
        raise ValueError(f"unknown backend kind {kind!r}") from None


def kinds() -> list[str]:
    """The names of every registered backend."""
    return list(plugins.registered(plugins.BACKENDS))


def make_backend(host: Any, transport: Transport) -> QueueBackend:
    """The queue of one host (a `config.HostConfig`: typed Any, as in `BackendAdapter.open`,
    since caseflow.config imports this module), reached through `transport`."""
    return adapter(host.backend.kind).open(host, transport)
