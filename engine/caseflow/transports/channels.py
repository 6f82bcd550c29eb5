"""The channel port: how the `ssh` and `openssh` transports reach a host's commands.

A channel is one command on the host, its stdin the data sent, its stdout and stderr what
comes back. Everything above the channels is shared (ssh.ChannelTransport: commands with their
retries, the staged upload, downloads and results): a way of opening channels is all that
tells the two transports apart. `ssh_channels.ParamikoChannels` opens them on one paramiko
connection; `openssh.OpenSSHChannels` as `ssh` processes over an OpenSSH master connection.

A way of opening channels keeps at most `transport.max_sessions` channels open at once (a
host's sshd refuses sessions beyond its MaxSessions), turns what its library or client raises
into caseflow's errors (`guard`), and says when a command cannot have started (`NotStarted`):
only such a command is sent again when it must not run twice (a submit).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from ..errors import TransientError
from . import RunResult

T = TypeVar("T")


class NotStarted(TransientError):
    """The command did not start on the host (nothing of it ran): safe to send again, also a
    command that must not run twice."""


class Permit:
    """One session of `max_sessions`, given back once (a channel's close, or its collection
    when it was dropped unclosed)."""

    def __init__(self, sessions: threading.BoundedSemaphore):
        self._sessions: threading.BoundedSemaphore | None = sessions
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, None
        if sessions is not None:
            sessions.release()


class Channel(Protocol):
    """What the staged upload, the tar reader and `drain` use of a channel with a command
    started on it (a paramiko Channel has it all; openssh._Channel provides it). A paramiko
    channel also has `send_ready()` and `send(data)`, with which one thread keeps several
    channels busy (upload_pump); without them, `sendall`."""

    def settimeout(self, timeout: float) -> None: ...
    def sendall(self, data: Any) -> None: ...
    def shutdown_write(self) -> None: ...
    def makefile(self, mode: str = ...) -> Any: ...
    def makefile_stderr(self, mode: str = ...) -> Any: ...
    def recv_exit_status(self) -> int: ...
    def close(self) -> None: ...


class Channels(Protocol):
    """One way of opening channels to a host (see the module's docstring)."""

    sessions: threading.BoundedSemaphore  # `max_sessions` of them

    def guard(self, fn: Callable[[], T], what: str) -> T:
        """Run fn; what the library or client raises becomes caseflow's error (TransientError,
        HostError, PermanentError), naming `what` and the host; a local file's error
        (tarstream.LocalWriteError) is the caller's to judge and passes unchanged."""
        ...

    def exec(self, command: str, timeout: float | None, what: str) -> RunResult:
        """Run the shell command `command` (quoted by the caller) to its end, stdin empty;
        NotStarted when it cannot have started."""
        ...

    def open(self, command: str) -> Any:
        """A new channel (a `Channel`) with `command` started on it; the caller sends its
        stdin, then shuts the channel's write side down."""
        ...

    def bulk(self, command: str, several: bool) -> Any:
        """A channel for an upload's data; `several`: one of several opened at once."""
        ...

    def drain(self, chan: Any, timeout: float | None = None) -> tuple[bytes, bytes]:
        """All of a channel's stdout and stderr, to their end."""
        ...

    def round_trip(self) -> float | None:
        """Seconds of one round trip, when this way can measure it better than a command's
        time (None: the transport times a command)."""
        ...

    def connect_ahead(self) -> None:
        """Connect now, if this way connects by itself, so that a first command is quick."""
        ...

    @property
    def connects(self) -> int:
        """Connections this process opened (for tests and benchmarks)."""
        ...

    def close(self) -> None: ...

    def describe(self) -> str:
        """How the host is reached, for `caseflow check` (after the host's name)."""
        ...

    def check_access(self, run_true: Callable[[], object]) -> Iterator[tuple[bool, str]]:
        """`caseflow check`'s findings; `run_true` runs `true` on the host (with retries)."""
        ...
