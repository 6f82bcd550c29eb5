"""The `ssh` and `openssh` transports: a host reached over SSH, each command and each stream a
channel (the channel port, channels.py) opened either by paramiko on one long-lived connection
(ssh_channels.py, the `ssh` transport) or by the system's `ssh` over an OpenSSH master
(openssh.py, the `openssh` transport). Everything above the channels is this one transport's.

Uploads go into a staging folder next to the target, as tar streams (written by
tarstream.py) into the remote `tar -x`, and files of `large_file_bytes` or more as byte
ranges over parallel channels into `dd`, as many channels as the round trip needs; the
staging folder is verified (file count and sizes, SHA-256 with `verify: checksum`) and only
then renamed into place, and an interrupted upload resumes (ssh_upload.py). Every remote
command is built from an argument list and quoted with shlex; the shell scripts are files of
their own (scripts/*.sh). Short outages are retried here (tenacity, `retrying`), longer ones
are left to the engine's persisted backoff.

The remote host needs a POSIX shell, GNU find, tar and coreutils (sha256sum).
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from ..errors import PermanentError, TransientError
from . import BOOKKEEPING, RunResult, TransportAdapter, remove_local, space_or_permission
from .channels import Channels, NotStarted
from .shell import script
from .ssh_channels import ParamikoChannels
from .ssh_connection import Unreachable
from .ssh_settings import SSHConfig, read_ssh
from .ssh_upload import StagedUpload
from .tarstream import LocalWriteError, extract, writing_locally

log = logging.getLogger("caseflow.ssh")

FETCH = script(__package__, "fetch.sh")
TAIL_COPY = f"{BOOKKEEPING}/fetched-tail"  # where fetch.sh puts the tail it sends
DOWNLOAD = script(__package__, "download.sh")

T = TypeVar("T")


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
    """A command safe to repeat is sent again after a transient error, not when the host is
    unreachable (the engine sends its cases elsewhere, after the reconnect interval)."""
    return isinstance(exc, TransientError) and not isinstance(exc, Unreachable)


def _not_started(exc: BaseException) -> bool:
    """A command that must not run twice is sent again only when it cannot have started."""
    return isinstance(exc, NotStarted)


class ChannelTransport(StagedUpload):
    """A transport whose commands and streams are channels of `channels` (see above)."""

    def __init__(self, cfg: SSHConfig, channels: Channels, sleep: Callable[[float], None]):
        super().__init__(cfg.name, cfg.root)
        self.cfg = cfg
        self.channels = channels
        self.sleep = sleep  # the retries' (tests pass one that does not wait)
        self.commands = 0  # remote commands run (for tests and benchmarks)
        self._root_resolved = not cfg.root.startswith("~")

    # -- plumbing ----------------------------------------------------------------------
    def retrying(self, fn: Callable[[], T], what: str, when: Callable[[BaseException], bool]) -> T:
        """fn, tried again after an error `when` accepts: up to 4 tries within 15 s, with an
        exponential wait (0.5 s, 1 s, 2 s, plus up to 0.5 s at random); the seconds-long
        retries of both transports (longer outages: the engine's persisted backoff)."""
        retrying = Retrying(
            stop=stop_after_attempt(4) | stop_after_delay(15),
            wait=wait_exponential(multiplier=0.5, max=4) + wait_random(0, 0.5),
            retry=retry_if_exception(when),
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

    def connect_ahead(self) -> None:
        self.channels.connect_ahead()

    @property
    def connects(self) -> int:
        return self.channels.connects

    def round_trip(self) -> float:
        measured = self.channels.round_trip()
        return super().round_trip() if measured is None else measured

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
        """Run a command that is safe to repeat: short outages are retried, also when the
        command may have run already."""
        command, what = shlex.join(argv), f"running {argv[0]}"
        res = self.retrying(lambda: self.channels.exec(command, timeout, what), what, _retryable)
        self.commands += 1
        return res

    def run_once(self, argv: Sequence[str], timeout: float | None = None) -> RunResult:
        """Run a command that must not run twice (a submit). It is sent again only when it
        cannot have started (no session, no master yet, a session the host refused). Once it
        is sent, a lost connection is a TransientError: it may have run, so the step is tried
        again later, and it adopts what the first run left (issue 13: a submit retried here
        after a lost reply added a second job)."""
        command, what = shlex.join(argv), f"running {argv[0]}"
        res = self.retrying(lambda: self.channels.exec(command, timeout, what), what, _not_started)
        self.commands += 1
        return res

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
            self.channels.guard(
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
            self.channels.guard(
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
        chan = self.channel(argv)
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
        self.channels.close()

    # -- caseflow check ----------------------------------------------------------------------
    def describe(self) -> str:
        return self.channels.describe()

    def check_access(self) -> Iterator[tuple[bool, str]]:
        return self.channels.check_access(lambda: self.run(["true"]))


class SSHTransport(ChannelTransport):
    """The `ssh` transport: channels on one paramiko connection."""

    channels: ParamikoChannels

    def __init__(self, cfg: SSHConfig, sleep: Callable[[float], None] = time.sleep):
        super().__init__(cfg, ParamikoChannels(cfg), sleep)


# what the remote side of an upload, a download and a results fetch runs (scripts/*.sh)
TOOLS = ("tar", "find", "sha256sum", "xargs", "dd", "sed", "df", "awk")
ADAPTER = TransportAdapter(config=SSHConfig, read=read_ssh, open=SSHTransport, tools=TOOLS)


def _glob_literal(text: str) -> str:
    """`text` as a find -path pattern that matches only itself."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
