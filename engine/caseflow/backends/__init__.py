"""The queue backend port: submit a job, ask about many jobs in one call, cancel one.

Adapters build their commands as argument lists and run them through a
transport, so every backend works over every transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

RUNNING, SUCCESS, FAILURE, NOT_FOUND = "running", "success", "failure", "not_found"
# What the queue said about one job could not be read (an entry in a form caseflow does not
# know, a Slurm job without an id, ...). It is that job's problem alone: the engine charges its
# case a transient attempt (`detail` is the reason) and judges every other job on its own entry.
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class JobSpec:
    """Everything a backend needs to start a case's job."""
    case_id: int
    label: str            # unique per case; lets a re-run find a job it already started
    remote_path: str      # the uploaded case folder, the job's working directory
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
    outcome: str                  # RUNNING, SUCCESS, FAILURE, NOT_FOUND or UNREADABLE
    detail: str = ""              # what a person should read (e.g. "exit code 3")
    exit_code: int | None = None


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

    def probe(self) -> None:
        """Raise HostError (or TransientError) while the queue cannot take work although the
        host answers; the engine asks this before it resumes a host whose work is paused."""

    def notice(self) -> str | None:
        """What the queue said last that a person should know (e.g. a paused group)."""
        return None

    def job_log(self, job: JobRef) -> str | None:
        """The job's combined stdout and stderr, or None when it cannot be had."""
        return None

    def check(self) -> list[tuple[bool, str]]:
        """For `caseflow check`: can the queue take work, as (ok, what a person reads) lines
        beyond the tools it needs; changes nothing on the host."""
        return []


def make_backend(host, transport) -> QueueBackend:
    """The queue of one host (a `config.HostConfig`), reached through `transport`."""
    kind = host.backend.kind
    if kind == "direct":
        from .direct import DirectBackend
        return DirectBackend(transport)
    if kind == "pueue":
        from .pueue import PueueBackend
        return PueueBackend(transport, host.groups, pueue=host.backend.pueue,
                            manage_groups=host.backend.manage_groups)
    if kind == "slurm":
        from .slurm import SlurmBackend
        return SlurmBackend(transport, host.backend)
    raise ValueError(f"unknown backend kind {kind!r}")
