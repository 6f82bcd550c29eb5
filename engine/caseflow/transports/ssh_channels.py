"""Channels on one paramiko connection: the `ssh` transport's way of reaching a host.

The connection (ssh_connection.Connection) is opened on demand and kept; a command is a
session channel on it. At most `max_sessions` are open at once; a session the host refuses
because its MaxSessions is lower is asked for again as channels close. What paramiko and the
socket raise becomes caseflow's error (`guard`), and a connection that broke is dropped, so
that the next command connects again.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TypeVar

import paramiko

from .. import metrics
from ..errors import PermanentError, TransientError
from . import RunResult
from .channels import NotStarted, Permit
from .ssh_connection import Connection, Unreachable, classify, transport_of
from .ssh_settings import SSHConfig
from .tarstream import LocalWriteError

log = logging.getLogger("caseflow.ssh")

T = TypeVar("T")


class _RefusedSessions(logging.Filter):
    """paramiko logs a refused channel as an ERROR; open_session asks for it again as
    channels close (a host's MaxSessions lower than transport.max_sessions, or sshd freeing
    a closed session a moment after the close), and says so itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED: open failed: Connect failed" not in record.getMessage()


logging.getLogger("paramiko.transport").addFilter(_RefusedSessions())


def _wire(command: str) -> bytes:
    """A command as the bytes the host gets: an argument that is not UTF-8 (a file name's
    bytes, held by Python as surrogates) goes as those bytes, as the OpenSSH client sends it
    (paramiko would encode it strictly and raise)."""
    return command.encode("utf-8", "surrogateescape")


def _lost(transport: paramiko.Transport, exc: BaseException) -> bool:
    """Whether `exc`, raised opening a channel, says the connection itself is gone."""
    if isinstance(exc, (EOFError, OSError)) and not isinstance(exc, TimeoutError):
        return True  # a slow host is not a lost connection
    return isinstance(exc, paramiko.SSHException) and not transport.is_active()


def start_command(chan: paramiko.Channel, command: str) -> None:
    """Start `command` on the new channel `chan` without waiting for the server's answer:
    paramiko's exec_command waits a round trip for it before the caller may send the
    command's stdin (a tar stream, a byte range), as OpenSSH's client does not. SSH keeps a
    channel's messages in order, so the data reaches the command. Refused (a forced command,
    a failed fork), paramiko closes the channel when the refusal comes: the sends fail and
    there is no exit status, as for a lost connection."""
    transport = chan.get_transport()
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("exec")
    m.add_boolean(True)  # want the answer: a refusal closes the channel (_request_failed)
    m.add_string(_wire(command))
    # paramiko has no public call that does not wait (nor this one in its stubs)
    transport._send_user_message(m)  # type: ignore[attr-defined]


class ParamikoChannels:
    """Channels on one long-lived paramiko connection (a `channels.Channels`)."""

    def __init__(self, cfg: SSHConfig):
        self.cfg = cfg
        self.name = cfg.name
        self.conn = Connection(cfg)
        self.sessions = threading.BoundedSemaphore(cfg.max_sessions)
        self._rtt: tuple[object, float] | None = None  # (paramiko transport, seconds)
        self._rtt_lock = threading.Lock()
        self._warm: object | None = None  # the paramiko transport a session was opened on

    def guard(self, fn: Callable[[], T], what: str) -> T:
        """Run fn; turn connection errors into caseflow errors and drop the broken connection
        (not for a local file's error: LocalWriteError is the caller's to judge)."""
        try:
            return fn()
        except (PermanentError, TransientError, LocalWriteError):
            raise
        except Exception as exc:
            err = classify(exc, f"{what} on {self.name}")
            if err is exc:
                raise
            metrics.ssh_error(self.name)
            if isinstance(err, TransientError):
                self.conn.reset()
            raise err from exc

    def connect_ahead(self) -> None:
        self.conn.connect_ahead()

    @property
    def connects(self) -> int:
        return self.conn.connects

    # -- channels ------------------------------------------------------------------------
    def session(self) -> paramiko.Channel:
        """A new session channel, within `max_sessions` open at once (the server's
        MaxSessions): the caller waits for one of ours to close rather than be refused. The
        channel gives its session back when it is closed (or collected unclosed)."""
        if not self.sessions.acquire(timeout=self.cfg.command_timeout):
            raise TransientError(
                f"no free session on the connection to {self.name} within "
                f"{self.cfg.command_timeout:.0f} s: all {self.cfg.max_sessions} "
                "(transport.max_sessions) in use"
            )
        try:
            chan = self._open_session()
        except BaseException:
            self.sessions.release()
            raise
        permit = Permit(self.sessions)
        close = chan.close

        def close_and_release() -> None:
            try:
                close()
            finally:
                permit.release()

        setattr(chan, "close", close_and_release)  # noqa: B010 - every close, paramiko's too
        weakref.finalize(chan, permit.release)
        return chan

    def _open_session(self) -> paramiko.Channel:
        """Open a session channel. One the host refuses because its MaxSessions is lower
        than `max_sessions` ("open failed: Connect failed"; paramiko may hand that reason to
        another thread's open and raise "Unable to open channel." here, as the connection
        stays up) is asked for again as channels close, for up to `connect_timeout`; then it
        is a TransientError, and the connection, which is fine, is kept: dropping it (as
        any other SSHException does) broke every other command on it. Measured: the
        pipeline bench with 8 workers against OpenSSH's default MaxSessions lost the
        connection 29 times and took 42 s for 200 cases."""
        deadline = time.monotonic() + self.cfg.connect_timeout
        wait = 0.02
        stale_tried = False
        while True:
            connects = self.conn.connects
            transport = transport_of(self.conn.client())
            try:
                chan = transport.open_session(timeout=self.cfg.connect_timeout)
                self._warm = transport  # a session has opened on it (see round_trip)
                return chan
            except paramiko.ChannelException as exc:
                if exc.code != paramiko.common.OPEN_FAILED_CONNECT_FAILED:
                    raise
                refusal = str(exc)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                reused = self.conn.connects == connects
                if _lost(transport, exc) and reused and not stale_tried:
                    # A connection that broke an instant ago still looks open: paramiko's
                    # reader closes its channels (waking the threads that wait on them)
                    # before it marks the transport inactive, so the next open can find it
                    # and fail on its dead socket (EOFError). Nothing was sent: open again
                    # on a new connection, once. Seen in CI: a resumed upload right after a
                    # cut failed its first step this way.
                    log.debug(
                        "the connection to %s was lost (%r); connecting again", self.name, exc
                    )
                    self.conn.discard(transport)
                    stale_tried = True
                    continue
                if (
                    not isinstance(exc, paramiko.SSHException)
                    or not transport.is_active()
                    or "Unable to open channel" not in str(exc)
                ):
                    raise
                refusal = str(exc)
            log.debug("%s refused a new session (%s); asking again", self.name, refusal)
            if time.monotonic() + wait > deadline:
                raise TransientError(
                    f"{self.name} refused a new session for {self.cfg.connect_timeout:.0f} s "
                    f"({refusal}); is its MaxSessions below transport.max_sessions "
                    f"({self.cfg.max_sessions})?"
                )
            time.sleep(wait)  # a channel closing, not an outage: not the retries' sleep
            wait = min(0.5, wait * 2)

    def open(self, command: str) -> paramiko.Channel:
        """A new channel with `command` started on it. The data may follow the request at
        once: the server's answer to it is not waited for (start_command)."""
        chan = self.session()
        try:
            chan.settimeout(self.cfg.command_timeout)
            start_command(chan, command)
        except BaseException:
            chan.close()
            raise
        return chan

    def bulk(self, command: str, several: bool) -> paramiko.Channel:
        """As `open`: a refused session is asked for again as channels close (session)."""
        return self.open(command)

    # -- commands ------------------------------------------------------------------------
    def exec(self, command: str, timeout: float | None, what: str) -> RunResult:
        """Run `command` on a session of its own. Until the session is open nothing is sent:
        a failure to get one (other than an unreachable host) is NotStarted."""
        try:
            chan = self.guard(self.session, what)
        except TransientError as exc:
            if isinstance(exc, (Unreachable, NotStarted)):
                raise
            raise NotStarted(str(exc)) from exc
        return self.guard(lambda: self._exec_on(chan, command, timeout), what)

    def _exec_on(self, chan: paramiko.Channel, command: str, timeout: float | None) -> RunResult:
        try:
            chan.settimeout(timeout or self.cfg.command_timeout)
            # The command's stdin is /dev/null on the remote side instead of an EOF sent
            # from here: paramiko can send that EOF after the channel's close when the
            # command ends at once, and OpenSSH then drops the whole connection ("ieof
            # packet referred to nonexistent channel", paramiko issue #1705): four threads
            # running short commands lost the connection every second or two.
            chan.exec_command(_wire("exec </dev/null; " + command))
            out, err = self.drain(chan, timeout)
            rc = chan.recv_exit_status()
            if rc == -1 and not chan.get_transport().is_active():
                # no exit status because the connection was lost (-1 with a live connection:
                # the command was killed by a signal); it may have run, or run in part
                raise TransientError(f"the connection to {self.name} was lost while a command ran")
        except TimeoutError as exc:
            metrics.ssh_error(self.name)
            raise TransientError(
                f"a command on {self.name} did not finish within "
                f"{timeout or self.cfg.command_timeout:.0f} s"
            ) from exc
        finally:
            chan.close()
        metrics.ssh_command(self.name)
        return RunResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def drain(self, chan: paramiko.Channel, timeout: float | None = None) -> tuple[bytes, bytes]:
        """All of stdout and stderr, until the channel's EOF.

        Not until the exit status: sshd may send it while output is still held back by
        the flow-control window, so stopping there loses the end of large outputs.
        Short waits keep stderr drained, so a chatty stderr cannot stall stdout.
        """
        deadline = time.monotonic() + (timeout or self.cfg.command_timeout)
        out, err = bytearray(), bytearray()
        chan.settimeout(0.2)
        for stream, recv in ((out, chan.recv), (err, chan.recv_stderr)):
            while True:
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                try:
                    data = recv(65536)
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
                    continue
                if not data:
                    break
                stream += data
        return bytes(out), bytes(err)

    def round_trip(self) -> float:
        """Seconds of one round trip to the host, measured once per connection (connecting
        first if need be) with a global request the server answers at once (OpenSSH refuses
        an unknown one, and says so). The first answer after the login can be late: sshd
        holds it until the client has acknowledged two small messages it sent unasked
        (Nagle's algorithm; see ssh_connection._QuickAckSocket, which removes that here but
        not on a ProxyJump host's hop): the first request took 42-46 ms on loopback, and
        every upload there chose the channels of a 45 ms link. So the quicker of two, or one
        once a channel has been opened on the connection: an upload opens its first
        command's channel, then measures while the command runs."""
        with self._rtt_lock:
            transport = transport_of(self.conn.client())
            if self._rtt is not None and self._rtt[0] is transport:
                return self._rtt[1]
            times = []
            for _ in range(1 if self._warm is transport else 2):
                t0 = time.monotonic()
                transport.global_request("round-trip@caseflow", wait=True)
                times.append(time.monotonic() - t0)
            self._rtt = (transport, min(times))
            return self._rtt[1]

    def close(self) -> None:
        self.conn.close()

    # -- caseflow check ----------------------------------------------------------------------
    def describe(self) -> str:
        ep = self.conn.endpoint
        return f", {ep}{', via ' + ep.proxy_jump if ep.proxy_jump else ''}"

    def check_access(self, run_true: Callable[[], object]) -> Iterator[tuple[bool, str]]:
        run_true()
        yield True, f"connected; host key verified against {self.conn.endpoint.known_hosts}"
