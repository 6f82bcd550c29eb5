"""The `openssh` transport: the system `ssh` client, every command and stream one channel over
one master connection per host (openssh_master.py).

For login nodes that ask for a one-time code at every login: a person authenticates once
(`caseflow login HOST`) and caseflow reuses the connection; paramiko cannot use an OpenSSH
master (paramiko issue #852), so the `ssh` transport cannot reach such hosts. Everything
above the channels is the `ssh` transport's own (ssh.py, ssh_upload.py, tarstream.py and
the remote scripts): the same tar stream upload, large files as byte ranges on parallel
channels, verification and atomic rename, batched polling, results by pattern. Here a
channel is an `ssh` process whose stdin and stdout carry the channel's data.

At most `max_sessions` channels are open at once (sshd's MaxSessions, 10 by default, counts
the sessions of one connection); a wait for one is bounded (`command_timeout`). sshd still
counts a session for a moment after the `ssh` of its channel has ended: an upload's channels
opened several at once wait until the host has started their command, and one it refused is
opened again (OpenSSHChannels.bulk). When the master is gone the host pauses with
`needs login: caseflow login HOST` (NeedsLogin): no case fails and none is charged an
attempt, and the engine probes (a local `ssh -O check`) until the master is back.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import select
import shlex
import subprocess
import tarfile
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from ..errors import HostError, PermanentError, TransientError
from . import RunResult, TransportAdapter
from .channels import NotStarted, Permit
from .openssh_master import Master, NeedsLogin
from .ssh import TOOLS, ChannelTransport
from .ssh_settings import OpenSSHConfig, read_openssh
from .tarstream import LocalWriteError

log = logging.getLogger("caseflow.openssh")

PIPE_BYTES = 1 << 20  # the pipe into each ssh: 1 MiB (Linux's default is 64 KiB)
F_SETPIPE_SZ = 1031
# what the ssh client itself (not a remote command) says when it fails
_SSH_SAID = re.compile(
    r"control ?socket|mux_client|kex_exchange_identification|"
    r"connection closed by|^ssh: ",
    re.I | re.M,
)
_REFUSED = ("session open refused", "administratively prohibited")
# what an ssh says that found no master and so, with ProxyCommand=false, sent nothing (when
# the master dies under a running command, ssh exits 255 and says nothing)
_NOTHING_SENT = "connection closed by unknown port 65535"
# what a bulk channel's command writes to stderr first: the host started it (see started)
MARK = b"caseflow: started\n"

T = TypeVar("T")


class OpenSSHChannels:
    """Channels as `ssh` processes over an OpenSSH master (a `channels.Channels`)."""

    def __init__(self, cfg: OpenSSHConfig):
        self.cfg = cfg
        self.name = cfg.name
        self.master = Master(cfg)
        self.sessions = threading.BoundedSemaphore(cfg.max_sessions)

    def connect_ahead(self) -> None:
        """Nothing: the master is kept open (master: daemon) or opened by `caseflow login`."""

    @property
    def connects(self) -> int:
        """Master connections this process opened (master: daemon; `caseflow login` opens
        them in a process of its own)."""
        return self.master.opened

    def round_trip(self) -> None:
        """None: no paramiko transport to send a global request on; the transport times a
        command, as the channels are opened through the master anyway."""
        return None

    def guard(self, fn: Callable[[], T], what: str) -> T:
        """Run fn; an `ssh` that broke off (a pipe that closed, a timeout) is caseflow's
        error: the host needs a login when its master is gone, else transient."""
        try:
            return fn()
        except (PermanentError, TransientError, HostError, LocalWriteError):
            raise  # (a local file's error is the caller's to judge, not the master's)
        except (OSError, EOFError, tarfile.ReadError) as exc:  # ReadError: a stream cut short
            raise self._lost(f"{what} on {self.name}: {type(exc).__name__}: {exc}") from exc

    def _lost(self, text: str) -> Exception:
        if self.cfg.master == "login" and not self.master.is_up():
            return NeedsLogin(self.name, self.master.probe_seconds)
        return TransientError(text)

    def ssh_failed(self, stderr: str) -> Exception | None:
        """After an exit code 255: the error, when ssh failed rather than the command."""
        text = " ".join(stderr.split())[:300]
        if any(s in text.lower() for s in _REFUSED):
            return NotStarted(
                f"{self.name} refused one more session (its sshd's "
                f"MaxSessions; transport.max_sessions is "
                f"{self.cfg.max_sessions}): {text}"
            )
        if not self.master.is_up():
            if self.cfg.master == "login":
                return NeedsLogin(self.name, self.master.probe_seconds)
            if _NOTHING_SENT in text.lower():
                return _MasterGone(f"no master connection to {self.name}: {text}")
            return TransientError(f"the master connection to {self.name} ended while a command ran")
        if _SSH_SAID.search(stderr):
            return TransientError(f"ssh to {self.name} failed: {text}")
        return None

    # -- commands ------------------------------------------------------------------------
    def exec(self, command: str, timeout: float | None, what: str) -> RunResult:
        """Run `command` as an `ssh` of its own; with `master: daemon` and no master yet
        (nothing was sent), open the master (or say why not) and run it once more."""
        try:
            return self._exec_once(command, timeout)
        except _MasterGone:
            self.master.ensure()
            return self._exec_once(command, timeout)

    def take_session(self) -> None:
        """One of `max_sessions`, waiting for it at most `command_timeout` seconds."""
        if not self.sessions.acquire(timeout=self.cfg.command_timeout):
            raise TransientError(
                f"no free session on the master connection to {self.name} within "
                f"{self.cfg.command_timeout:.0f} s: all {self.cfg.max_sessions} "
                "(transport.max_sessions) in use"
            )

    def _exec_once(self, command: str, timeout: float | None) -> RunResult:
        limit = timeout or self.cfg.command_timeout
        self.take_session()
        try:
            proc = subprocess.run(
                self.master.command(command),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=limit,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise TransientError(
                f"a command on {self.name} did not finish within {limit:.0f} s"
            ) from exc
        except OSError as exc:
            raise HostError(f"cannot run the OpenSSH client: {exc}") from exc
        finally:
            self.sessions.release()
        err = proc.stderr.decode("utf-8", "replace")
        if proc.returncode == 255:
            problem = self.ssh_failed(err)
            if problem is not None:
                raise problem
        return RunResult(proc.returncode, proc.stdout.decode("utf-8", "replace"), err)

    # -- channels ------------------------------------------------------------------------
    def open(self, command: str) -> _Channel:
        if self.cfg.master == "daemon":
            self.master.ensure()  # a stream cannot be sent twice: the master first
        return _Channel(self, command)

    def bulk(self, command: str, several: bool) -> _Channel:
        """A channel for an upload's data; one of several opened at once only once the host
        has started its command. sshd counts a session for a moment after the `ssh` of its
        channel has ended, so it may refuse one opened at once in its place: the byte ranges'
        channels (up to max_channels) opened as the tar streams' ended were refused now and
        then ("Session open refused by peer", MaxSessions), failing the upload. Nothing was
        sent on a refused channel: it is opened again as sessions are freed, for up to
        `connect_timeout` (as the ssh transport does). A single channel (a small case's one
        stream) does not wait: its data follows its command at once."""
        if not several:
            return self.open(command)
        if self.cfg.master == "daemon":
            self.master.ensure()
        deadline = time.monotonic() + self.cfg.connect_timeout
        wait = 0.02
        while True:
            chan = _Channel(self, command, mark=True)
            try:
                chan.started(deadline)
                return chan
            except _MasterGone:
                chan.close()
                raise
            except NotStarted as exc:
                chan.close()
                if time.monotonic() + wait > deadline:
                    raise
                log.debug("%s refused a new session (%s); asking again", self.name, exc)
            except BaseException:
                chan.close()
                raise
            time.sleep(wait)  # a session being freed, not an outage
            wait = min(0.5, wait * 2)

    def drain(self, chan: _Channel, timeout: float | None = None) -> tuple[bytes, bytes]:
        """All of a channel's stdout, then its stderr once the ssh has ended."""
        out = bytearray()
        reader = chan.makefile("rb", timeout)
        while True:
            data = reader.read(1 << 16)
            if not data:
                break
            out += data
        return bytes(out), chan.stderr_bytes()

    def close(self) -> None:
        """The master stays: it is the person's login (or closes itself when unused)."""

    # -- caseflow check ----------------------------------------------------------------------
    def describe(self) -> str:
        return f", {self.cfg.host} through its master connection"

    def check_access(self, run_true: Callable[[], object]) -> Iterator[tuple[bool, str]]:
        """Is a master connection up? Without one (master: login) nothing more can be
        checked; with one, a command runs through it."""
        try:
            self.master.prepare_folder()
            pid = self.master.pid()
        except HostError as exc:
            yield False, str(exc)
            return
        where = self.master.socket_path()
        if pid is not None:
            yield True, f"master connection up (pid {pid}, {where})"
        elif self.cfg.master == "daemon":
            yield True, f"no master connection yet at {where}; caseflow opens it"
        else:
            yield (
                False,
                (
                    f"no master connection at {where}: log in first with "
                    f"`caseflow login {self.name}`"
                ),
            )
            return
        run_true()
        yield (
            True,
            (
                "a command ran through the master connection (host key checked by "
                f"OpenSSH: StrictHostKeyChecking={self.cfg.strict_host_key_checking})"
            ),
        )


class OpenSSHTransport(ChannelTransport):
    """The `openssh` transport: channels over an OpenSSH master instead of paramiko's."""

    cfg: OpenSSHConfig
    channels: OpenSSHChannels

    def __init__(self, cfg: OpenSSHConfig, sleep: Callable[[float], None] = time.sleep):
        super().__init__(cfg, OpenSSHChannels(cfg), sleep)


class _MasterGone(NotStarted):
    """master: daemon and no master (nothing was sent): open it and run the command again."""


class _Channel:
    """One channel over the master: an `ssh` process, its stdin and stdout the channel's data.
    What the staged upload and the tar reader use of a paramiko channel: sendall,
    shutdown_write, makefile, makefile_stderr, recv_exit_status, closed, eof_received, close.
    Waits are bounded by the command timeout (sending, reading, the exit)."""

    def __init__(self, transport: OpenSSHChannels, command: str, mark: bool = False):
        self.t = transport
        self.timeout = transport.cfg.command_timeout
        self._closed = False
        self._status: int | None = None
        self._mark = mark  # the command's stderr starts with MARK (see started)
        if mark:
            command = f"printf {shlex.quote(MARK.decode())} >&2; exec {command}"
        transport.take_session()
        self._permit = Permit(transport.sessions)  # given back once: close, or collected
        try:
            self.err = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(
                transport.master.command(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.err,
                start_new_session=True,
                bufsize=0,
            )
        except BaseException:
            self._release()
            raise
        # a channel dropped unclosed (a bug) still ends its ssh and gives its session back
        weakref.finalize(self, _reap, self.proc, self._permit)
        # both are pipes (never None), which Popen's types cannot say
        self.stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        self.stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        self._stdin = self.stdin.fileno()
        try:  # 1 MiB at a time into ssh instead of 16 writes of 64 KiB
            fcntl.fcntl(self._stdin, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass
        os.set_blocking(self._stdin, False)  # so that a stalled ssh cannot block a send

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    @property
    def closed(self) -> bool:
        return self._closed or self.proc.poll() is not None

    @property
    def eof_received(self) -> bool:
        return self.proc.poll() is not None

    def sendall(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        while view:
            try:
                n = os.write(self._stdin, view)
            except BlockingIOError:
                if not select.select([], [self._stdin], [], self.timeout)[1]:
                    raise TimeoutError(f"nothing could be sent for {self.timeout:.0f} s") from None
                continue
            view = view[n:]

    def shutdown_write(self) -> None:
        if not self.stdin.closed:
            self.stdin.close()

    def makefile(self, mode: str = "rb", timeout: float | None = None) -> _Reader:
        return _Reader(self.stdout, timeout or self.timeout)

    def makefile_stderr(self, mode: str = "rb") -> _Stderr:
        return _Stderr(self)

    def _wait(self) -> int:
        """The exit code, once ssh has ended; what it still writes to stdout is dropped."""
        if self._status is None:
            self.shutdown_write()
            reader = self.makefile()
            while reader.read(1 << 16):
                pass
            try:
                self._status = self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired as exc:
                self.proc.kill()
                raise TimeoutError(f"ssh did not end within {self.timeout:.0f} s") from exc
        return self._status

    def started(self, deadline: float) -> None:
        """Wait until the host has started the command (the MARK on its stderr) or, at the
        latest, until `deadline` (then go on as without). An `ssh` that ended first raises
        what that means (a session the host refused: NotStarted)."""
        fd = self.err.fileno()
        wait = 0.001
        while True:
            # (what ssh itself says, such as a refusal, goes to the same file: the MARK, and
            # not any text, says the command started; read without moving the file's offset,
            # which the ssh shares)
            said = os.pread(fd, 1 << 16, 0)
            if MARK in said:
                return
            if self.proc.poll() is not None:
                said = os.pread(fd, 1 << 16, 0)
                if self.proc.returncode == 255 and MARK not in said:
                    problem = self.t.ssh_failed(said.decode("utf-8", "replace"))
                    if problem is not None:
                        raise problem
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(wait)
            wait = min(0.01, wait * 2)

    def stderr_bytes(self) -> bytes:
        self._wait()
        self.err.seek(0)
        data = self.err.read()
        return data.replace(MARK, b"", 1) if self._mark else data

    def recv_exit_status(self) -> int:
        rc = self._wait()
        if rc == 255:
            problem = self.t.ssh_failed(self.stderr_bytes().decode("utf-8", "replace"))
            if problem is not None:
                raise problem
        return rc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for f in (self.stdin, self.stdout, self.err):
                try:
                    f.close()
                except OSError:
                    pass
        finally:
            self._release()

    def _release(self) -> None:
        self._permit.release()


def _reap(proc: subprocess.Popen, permit: Permit) -> None:
    """What closing a channel does, for one that was collected unclosed."""
    try:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        pass
    finally:
        permit.release()


class _Reader:
    """A channel's stdout for the tar reader: reads that wait at most `timeout` seconds."""

    def __init__(self, pipe: IO[bytes], timeout: float):
        self.pipe = pipe
        self.timeout = timeout

    def read(self, size: int = -1) -> bytes:
        if self.pipe.closed:
            return b""
        fd = self.pipe.fileno()
        if size is None or size < 0:
            chunks: list[bytes] = []
            while True:
                data = self.read(1 << 16)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)
        if not select.select([fd], [], [], self.timeout)[0]:
            # not an OSError: the tar reader would take that for a local file's problem
            raise TransientError(f"nothing arrived for {self.timeout:.0f} s")
        return os.read(fd, size)


class _Stderr:
    def __init__(self, chan: _Channel):
        self.chan = chan

    def read(self, size: int = -1) -> bytes:
        return self.chan.stderr_bytes()


# the same remote side as the ssh transport's
ADAPTER = TransportAdapter(
    config=OpenSSHConfig, read=read_openssh, open=OpenSSHTransport, tools=TOOLS
)

__all__ = ["ADAPTER", "OpenSSHTransport", "NeedsLogin"]
