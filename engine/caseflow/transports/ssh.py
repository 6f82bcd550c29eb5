"""The `ssh` transport: a remote host reached with paramiko over one long-lived connection.

Uploads go into a staging folder next to the target, as tar streams (written by
tarstream.py) into the remote `tar -x`, and files of `large_file_bytes` or more as byte
ranges over parallel channels into `dd`, as many channels as the round trip needs; the
staging folder is verified (file count and sizes, SHA-256 with `verify: checksum`) and only
then renamed into place, and an interrupted upload resumes (ssh_upload.py). Every remote
command is
built from an argument list and quoted with shlex; the shell scripts are files of their own
(scripts/*.sh); short outages are retried
with tenacity, longer ones are left to the engine's persisted backoff.

The remote host needs a POSIX shell, GNU find, tar and coreutils (sha256sum).
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import shlex
import shutil
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import paramiko
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from .. import metrics
from ..errors import PermanentError, TransientError
from . import BOOKKEEPING, RunResult, Transport, TransportAdapter, remove_local, space_or_permission
from .shell import script
from .ssh_connection import Connection, Unreachable, classify, transport_of
from .ssh_settings import SSHConfig, read_ssh
from .ssh_upload import StagedUpload
from .tarstream import LocalWriteError, extract, writing_locally

log = logging.getLogger("caseflow.ssh")

FETCH = script(__package__, "fetch.sh")
TAIL_COPY = f"{BOOKKEEPING}/fetched-tail"  # where fetch.sh puts the tail it sends
DOWNLOAD = script(__package__, "download.sh")


class _RefusedSessions(logging.Filter):
    """paramiko logs a refused channel as an ERROR; _open_session asks for it again as
    channels close (a host's MaxSessions lower than transport.max_sessions, or sshd freeing
    a closed session a moment after the close), and says so itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED: open failed: Connect failed" not in record.getMessage()


logging.getLogger("paramiko.transport").addFilter(_RefusedSessions())


def local_write_problem(error: OSError, folder: Path, what: str = "results") -> Exception:
    """What a local file error while `what` arrive into `folder` means for the case: the
    local side's problem, never the connection's (dropping the connection for it cut every
    other case's upload on it, at every retry). A full disk is transient (room can be made,
    as with the `local` transport: the case waits, within retry.give_up_after_seconds); a
    folder that cannot be written (no permission, a read-only file system) is permanent."""
    text = f"{what} could not be written to {folder}: {error.strerror or error}"
    name = error.filename
    if isinstance(name, (str, bytes)) and os.fsdecode(name) != os.fspath(folder):
        text += f" ({os.fsdecode(name)})"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return TransientError(f"{text}; tried again later (make room there)")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG):
        return PermanentError(text)
    return TransientError(text)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientError) and not isinstance(exc, Unreachable)


class Permit:
    """One session of `max_sessions`, given back once."""

    def __init__(self, sessions: threading.BoundedSemaphore):
        self._sessions: threading.BoundedSemaphore | None = sessions
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, None
        if sessions is not None:
            sessions.release()


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
    m.add_string(command)
    # paramiko has no public call that does not wait (nor this one in its stubs)
    transport._send_user_message(m)  # type: ignore[attr-defined]


class SSHTransport(StagedUpload, Transport):
    def __init__(self, cfg, sleep=time.sleep):
        super().__init__(cfg.name, cfg.root)
        self.cfg = cfg
        self.conn = Connection(cfg)
        self.sleep = sleep
        self.commands = 0  # remote commands run (for tests and benchmarks)
        self._root_resolved = not cfg.root.startswith("~")
        self._rtt: tuple[object, float] | None = None  # (paramiko transport, seconds)
        self._rtt_lock = threading.Lock()
        self._warm: object | None = None  # the paramiko transport a session was opened on
        self.sessions = threading.BoundedSemaphore(cfg.max_sessions)

    # -- plumbing ----------------------------------------------------------------------
    def _retrying(self, fn, what: str):
        retrying = Retrying(
            stop=stop_after_attempt(4) | stop_after_delay(15),
            wait=wait_exponential(multiplier=0.5, max=4) + wait_random(0, 0.5),
            retry=retry_if_exception(_retryable),
            reraise=True,
            sleep=self.sleep,
            before_sleep=lambda rs: log.info(
                "%s on %s failed (%s); trying again",
                what,
                self.name,
                rs.outcome.exception() if rs.outcome else None,
            ),
        )
        return retrying(fn)

    def guard(self, fn, what: str):
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

    def _resolve_root(self) -> None:
        if self._root_resolved:
            return
        res = self.run(["sh", "-c", 'printf %s "$HOME"'])
        home = res.stdout.strip()
        if res.returncode != 0 or not home.startswith("/"):
            raise TransientError(f"cannot find the home folder on {self.name}")
        self.root = home + self.cfg.root[1:]
        self._root_resolved = True

    def path(self, *parts: str) -> str:
        self._resolve_root()
        return posixpath.join(self.root, *parts)

    # -- commands ------------------------------------------------------------------------
    def run(self, argv: Sequence[str], timeout: float | None = None) -> RunResult:
        """Run a command that is safe to repeat: short outages are retried (tenacity), also
        when the command may have run already."""
        command = shlex.join(argv)
        return self._retrying(
            lambda: self.guard(lambda: self._exec(command, timeout), f"running {argv[0]}"),
            f"running {argv[0]}",
        )

    def run_once(self, argv: Sequence[str], timeout: float | None = None) -> RunResult:
        """Run a command that must not run twice (a submit). Connecting and opening its
        channel are retried: nothing has been sent yet. Once the command is sent, a lost
        connection is a TransientError: it may have run, so the step is tried again later, and
        it adopts what the first run left (issue 13: a submit retried here after a lost reply
        added a second job)."""
        command, what = shlex.join(argv), f"running {argv[0]}"
        chan = self._retrying(lambda: self.guard(self._session, what), what)
        return self.guard(lambda: self._exec(command, timeout, chan), what)

    def _session(self):
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

    def _open_session(self):
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

    def _exec(self, command: str, timeout: float | None, chan=None) -> RunResult:
        if chan is None:
            chan = self._session()
        try:
            chan.settimeout(timeout or self.cfg.command_timeout)
            # The command's stdin is /dev/null on the remote side instead of an EOF sent
            # from here: paramiko can send that EOF after the channel's close when the
            # command ends at once, and OpenSSH then drops the whole connection ("ieof
            # packet referred to nonexistent channel", paramiko issue #1705): four threads
            # running short commands lost the connection every second or two.
            chan.exec_command("exec </dev/null; " + command)
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
        self.commands += 1
        metrics.ssh_command(self.name)
        return RunResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def drain(self, chan, timeout: float | None = None) -> tuple[bytes, bytes]:
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

    def _sh(self, script: str, *args: str, what: str) -> RunResult:
        return self.run(["sh", "-c", script, "caseflow", *args])

    def _channel(self, argv: Sequence[str]):
        """A new channel with the command `argv` started on it (its stdin is the channel:
        the caller sends, then shuts the channel's write side down). The data may follow the
        request at once: the server's answer to it is not waited for (start_command)."""
        chan = self._session()
        try:
            chan.settimeout(self.cfg.command_timeout)
            start_command(chan, shlex.join(argv))
        except BaseException:
            chan.close()
            raise
        return chan

    # -- download ----------------------------------------------------------------------------
    def download(
        self, remote_path: str, local_path: Path, patterns: Sequence[str] | None = None
    ) -> None:
        local_path = Path(local_path)
        staging = local_path.parent / f".staging-{local_path.name}"
        parent, base = posixpath.split(remote_path.rstrip("/"))
        if patterns is None:
            argv = ["tar", "--hard-dereference", "-c", "-f", "-", "-C", parent, "--", base]
        else:  # find matches (no shell sees the patterns), tar packs the list it gets
            expr = ["("]
            for i, pattern in enumerate(patterns):
                expr += (["-o"] if i else []) + ["-path", f"./{base}/{pattern}"]
            expr += [")", "(", "-type", "f", "-o", "-type", "l", ")"]
            argv = ["sh", "-c", DOWNLOAD, "caseflow", parent, f"./{base}", *expr]
        try:
            self.guard(
                lambda: self._tar_download(argv, base, staging, remote_path, links=True),
                "downloading",
            )
            with writing_locally():
                if os.path.lexists(local_path):
                    remove_local(local_path)
                fetched = staging / base
                if patterns is not None and not fetched.exists():
                    fetched.mkdir()  # nothing matched: an empty folder
                os.rename(fetched, local_path)
                staging.rmdir()
        except LocalWriteError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise local_write_problem(exc.error, local_path.parent, "the download") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def fetch_results(
        self, remote_path: str, local_path: Path, patterns: Sequence[str] | None = None
    ) -> int:
        return self._fetch(remote_path, local_path, patterns, None, 0)[0]

    def fetch_results_and_tail(
        self,
        remote_path: str,
        local_path: Path,
        patterns: Sequence[str] | None,
        tail: str,
        limit: int,
    ) -> tuple[int, str | None]:
        """One command: the tail comes in the results' tar stream (scripts/fetch.sh)."""
        return self._fetch(remote_path, local_path, patterns, tail, limit)

    def _fetch(
        self,
        remote_path: str,
        local_path: Path,
        patterns: Sequence[str] | None,
        tail: str | None,
        limit: int,
    ) -> tuple[int, str | None]:
        local_path = Path(local_path)
        staging = local_path.parent / f".staging-{local_path.name}"
        parent, base = posixpath.split(remote_path.rstrip("/"))
        here = f"./{_glob_literal(base)}"
        tests = ["(", "-path", f"{here}/.caseflow", "-prune", ")", "-o", "-type", "f"]
        if patterns:
            tests += ["("]
            for i, pattern in enumerate(patterns):
                tests += (["-o"] if i else []) + ["-path", f"{here}/{pattern}"]
            tests += [")"]
        argv = [
            "sh",
            "-c",
            FETCH,
            "caseflow",
            parent,
            base,
            "all" if patterns else "changed",
            tail or "-",
            str(limit),
            *tests,
        ]
        try:
            self.guard(
                lambda: self._tar_download(argv, base, staging, remote_path), "fetching results"
            )
            with writing_locally():
                return self._fetched(staging / base, local_path, remote_path, tail)
        except LocalWriteError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise local_write_problem(exc.error, local_path.parent) from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _fetched(
        self, fetched: Path, local_path: Path, remote_path: str, tail: str | None
    ) -> tuple[int, str | None]:
        """The results unpacked in `fetched` put in place as `local_path`: (the file count,
        the tail's text)."""
        if not fetched.exists():
            fetched.mkdir()  # nothing new: an empty folder
        elif not fetched.is_dir():
            raise PermanentError(
                f"refusing the results of {remote_path} on {self.name}: the "
                "host sent a file in place of the case folder"
            )
        text = None
        kept = fetched / TAIL_COPY
        if tail is not None and kept.is_file():  # the only file fetch.sh sends from there
            text = kept.read_bytes().decode("utf-8", "surrogateescape")
        shutil.rmtree(fetched / BOOKKEEPING, ignore_errors=True)
        count = sum(len(files) for _, _, files in os.walk(fetched))
        if os.path.lexists(local_path):
            remove_local(local_path)
        os.rename(fetched, local_path)
        fetched.parent.rmdir()
        return count, text

    def _tar_download(
        self, argv: list[str], base: str, staging: Path, remote_path: str, links: bool = False
    ) -> None:
        with writing_locally():
            if os.path.lexists(staging):
                remove_local(staging)
            staging.mkdir(parents=True)
        chan = self._channel(argv)
        try:
            unreadable = extract(chan.makefile("rb"), base, staging, links=links)
            err = chan.makefile_stderr("rb").read().decode("utf-8", "replace")
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        self.commands += 1
        if rc == 0 and unreadable is not None:
            raise TransientError(f"download from {self.name}: no tar stream ({unreadable})")
        if rc != 0:
            if "Permission denied" in err:
                raise PermanentError(f"reading {remote_path} on {self.name}: {err.strip()[:300]}")
            if rc in (2, 20) or "No such file" in err or "Cannot stat" in err:
                raise PermanentError(f"{remote_path} does not exist on {self.name}")
            raise TransientError(f"remote tar on {self.name} exited {rc}: {err.strip()[:300]}")

    def remove_tree(self, remote_path: str) -> None:
        res = self.run(["rm", "-rf", "--", remote_path])
        if res.returncode != 0:
            raise space_or_permission(res.stderr, f"removing {remote_path}") or TransientError(
                f"removing {remote_path} failed: {res.stderr.strip()[:300]}"
            )

    def close(self) -> None:
        self.conn.close()

    # -- caseflow check ----------------------------------------------------------------------
    def describe(self) -> str:
        ep = self.conn.endpoint
        return f", {ep}{', via ' + ep.proxy_jump if ep.proxy_jump else ''}"

    def check_access(self) -> Iterator[tuple[bool, str]]:
        self.run(["true"])
        yield True, f"connected; host key verified against {self.conn.endpoint.known_hosts}"


# what the remote side of an upload, a download and a results fetch runs (scripts/*.sh)
TOOLS = ("tar", "find", "sha256sum", "xargs", "dd", "sed", "df", "awk")
ADAPTER = TransportAdapter(config=SSHConfig, read=read_ssh, open=SSHTransport, tools=TOOLS)


def _glob_literal(text: str) -> str:
    """`text` as a find -path pattern that matches only itself."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
