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

RUNNING, SUCCESS, FAILURE, NOT_FOUND = "running", "success", "failure", "not_found"
# What the queue said about one job could not be read (an entry in a form caseflow does not
# know, a Slurm job without an id, ...). It is that job's problem alone: the engine charges its
# case a transient attempt (`detail` is the reason) and judges every other job on its own entry.
UNREADABLE = "unreadable"


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


@dataclass(frozen=True)
class JobRef:
    """A submitted job, as the store remembers it."""

    case_id: int
    task_id: str
    label: str
    remote_path: str


@dataclass(frozen=True)
class JobStatus:
    outcome: str  # RUNNING, SUCCESS, FAILURE, NOT_FOUND or UNREADABLE
    detail: str = ""  # what a person should read (e.g. "exit code 3")
    exit_code: int | None = None


LOG_TAIL_BYTES = 1_000_000  # of a job's output, kept at most (its end)


class QueueBackend(ABC):
    @abstractmethod
    def submit(self, job: JobSpec) -> str:
        """Start the job (or find the one already started for job.label); return its task id."""

    @abstractmethod
    def status(self, jobs: Sequence[JobRef]) -> dict[int, JobStatus]:
        """The status of every given job, keyed by case id, in one remote call."""

    @abstractmethod
    def cancel(self, job: JobRef) -> None:
        """Stop the job; no error when it has already ended."""

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
    # a `config_reader.Section` -> its settings; None: they are the core keys alone
    read: Callable[[Any], BackendConfig] | None = None
    tools: tuple[str, ...] = ()  # commands it runs on the host (caseflow check)
    # (reader of the host, `config.HostConfig`) -> None, raising the reader's error when the
    # host's other settings do not suit the backend (e.g. devices that Slurm picks itself)
    check_host: Callable[[Any, Any], None] | None = None


def adapter(kind: str) -> BackendAdapter:
    """The backend adapter registered as `kind`; ValueError when none is."""
    try:
        return plugins.load(plugins.BACKENDS, kind, BackendAdapter)
    except KeyError:
        raise ValueError(f"unknown backend kind {kind!r}") from None


def kinds() -> list[str]:
    """The names of every registered backend."""
    return list(plugins.registered(plugins.BACKENDS))


def make_backend(host, transport) -> QueueBackend:
    """The queue of one host (a `config.HostConfig`), reached through `transport`."""
    return adapter(host.backend.kind).open(host, transport)
