"""The transport port: how caseflow reaches the host that runs the jobs.

An adapter uploads a case folder atomically and verified, runs a command given
as an argument list (never a shell string built from case data), downloads
files, and removes remote folders. Adapters raise TransientError or PermanentError only.

An adapter registers a `TransportAdapter` under its name in the entry point group
`caseflow.transports` (see caseflow.plugins): its settings (a `TransportConfig` subclass),
how they are read from a host's `transport:`, how the transport is made, the remote tools
it needs. Nothing else in caseflow names it.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import plugins
from ..casefolder import Manifest
from ..errors import PermanentError
from ..settings import one_of, setting

VERIFY_MODES = ("size", "checksum")  # how an upload is checked (every transport's `verify:`)


BOOKKEEPING = ".caseflow"  # caseflow's own folder at the top of a remote case folder
UPLOADED_MARKER = f"{BOOKKEEPING}/uploaded"  # made when the upload was complete and verified


def mark_uploaded(folder: str | os.PathLike[str]) -> None:
    """Mark a local stand-in of a remote case folder as completely uploaded, now; then let
    the file system's clock tick (coarse: 4-10 ms), so that nothing written after this
    shares the mark's timestamp (results are the files changed after the mark)."""
    (Path(folder) / BOOKKEEPING).mkdir(exist_ok=True)
    marker = Path(folder) / UPLOADED_MARKER
    marker.write_bytes(b"")
    mark = os.stat(marker).st_ctime_ns
    probe = Path(folder) / BOOKKEEPING / ".clock-probe"
    deadline = time.monotonic() + 0.1
    try:  # until a file written now is newer than the mark (1-4 ms), not a fixed sleep
        while True:
            probe.write_bytes(b"")
            if os.stat(probe).st_ctime_ns > mark or time.monotonic() > deadline:
                break
            time.sleep(0.001)
    finally:
        probe.unlink(missing_ok=True)


def space_needed(manifest: Manifest, block: int = 4096) -> int:
    """Bytes a copy of the case takes at least: files rounded up to blocks, a block per entry."""
    return sum(
        -(-e.size // block) * block for e in manifest.entries if e.kind == "f"
    ) + block * len(manifest.entries)


def check_room(manifest: Manifest, free: int, where: str) -> None:
    """Fail at once, before sending anything, a case that cannot fit: it would fill the
    disk that other cases' uploads and jobs need too."""
    needed = space_needed(manifest)
    if needed > free:
        raise PermanentError(
            f"the case needs {_mb(needed)} but {where} has only {_mb(free)} "
            "free: no space left on the remote side"
        )


def space_or_permission(text: str, action: str) -> Exception | None:
    """The PermanentError a remote command's error text means, if any: a full disk (the case
    fails, the others go on) or a permission problem."""
    low = text.lower()
    # GNU tar reports a write cut short by a full disk as "Wrote only N of M bytes"
    if "no space left" in low or "disk quota" in low or "wrote only" in low:
        return PermanentError(f"{action}: no space left on the remote side ({text.strip()[:200]})")
    if "permission denied" in low or "read-only file system" in low:
        return PermanentError(f"{action}: {text.strip()[:300]}")
    return None


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def remove_local(path: str | os.PathLike[str]) -> None:
    """Remove a local file, link or folder tree."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str


class Transport(ABC):
    """One remote host (or, for `local`, a folder on this machine standing in for one)."""

    def __init__(self, name: str, root: str):
        self.name = name
        self.root = root

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @abstractmethod
    def upload_dir(
        self,
        local_dir: Path,
        remote_path: str,
        manifest: Manifest,
        progress: Callable[[int, int], None] | None = None,
    ) -> bool:
        """Put `local_dir` at `remote_path` via a staging folder, verified against `manifest`.

        `progress(bytes_sent, bytes_total)` is called as data goes out. Returns
        False when a complete, verified copy was already there (a re-run after a
        crash), True when it was uploaded now.
        """

    def discard_upload(self, remote_path: str) -> None:  # noqa: B027 (an optional hook)
        """Remove what an interrupted upload to `remote_path` left for a later attempt to
        resume (its staging folder), once no case will resume it. No error when there is
        nothing. Adapters that keep nothing after a failed upload need not override it."""

    @abstractmethod
    def run(self, argv: Sequence[str], timeout: float | None = 60.0) -> RunResult:
        """Run a command on the host; `argv` is quoted by the adapter as needed. The adapter
        may run it again after a short outage, so it must be safe to repeat (a read, a
        removal, a script that checks first); else use `run_once`."""

    def run_once(self, argv: Sequence[str], timeout: float | None = 60.0) -> RunResult:
        """Like `run`, for a command that must not run twice (a submit): the adapter never
        repeats it once it may have started. A failure is a TransientError; the step that
        asked tries again later and first adopts what an earlier run left (a job of the
        case's label). Adapters without retries need not override it."""
        return self.run(argv, timeout)

    @abstractmethod
    def download(
        self, remote_path: str, local_path: Path, patterns: Sequence[str] | None = None
    ) -> None:
        """Copy a remote file or folder to `local_path`, atomically (staging, then rename).

        With `patterns`, `remote_path` is a folder and only its files (and links) whose
        path relative to it matches one of the patterns are copied, keeping their
        relative paths. Patterns are shell-style, matched like `find -path`: `*`
        also matches `/` (`output/*` is everything under output/, `*.log` any log).
        An existing `local_path` is replaced only once the new copy is complete.
        """

    @abstractmethod
    def fetch_results(
        self, remote_path: str, local_path: Path, patterns: Sequence[str] | None = None
    ) -> int:
        """Copy a job's results from its case folder to `local_path`; return the file count.

        Without `patterns`: every regular file the job created or changed, i.e.
        changed after the upload's mark (all files when there is no mark). With
        `patterns`: the files matching one of them (as for `download`). The
        bookkeeping folder is left out. Atomic like `download`.
        """

    def fetch_results_and_tail(
        self,
        remote_path: str,
        local_path: Path,
        patterns: Sequence[str] | None,
        tail: str,
        limit: int,
    ) -> tuple[int, str | None]:
        """`fetch_results`, and the last `limit` bytes of the file `tail` (a path relative to
        the case folder, such as the job's log in the bookkeeping folder) as text, None when
        there is no such file: (the file count, the text). Adapters that can do both in one
        command override it (a remote session and a round trip less per case); this does
        them one after the other, the tail first."""
        res = self.run(["tail", "-c", str(limit), "--", posixpath.join(remote_path, tail)])
        text = res.stdout if res.returncode == 0 else None
        return self.fetch_results(remote_path, local_path, patterns), text

    @abstractmethod
    def remove_tree(self, remote_path: str) -> None:
        """Delete a remote folder and everything in it; no error when it is absent."""

    def connect_ahead(self) -> None:  # noqa: B027 (an optional hook, as close)
        """Start connecting in the background, if not connected, while the caller does
        something local first (scanning the case before its upload); the next remote call
        uses that connection, or reports its failure as its own."""

    def close(self) -> None:  # noqa: B027 (an optional hook: adapters without connections)
        """Release connections; the transport may be used again afterwards."""

    def describe(self) -> str:
        """How the host is reached, after the kind in `caseflow check`'s heading ("" when the
        kind says it all)."""
        return ""

    def check_access(self) -> Iterator[tuple[bool, str]]:
        """For `caseflow check`: reach the host and say how it was verified, as (ok, what a
        person reads) lines; a line that is not ok ends the host's check. Raises the
        transport's errors when a command cannot run."""
        self.run(["true"])
        yield from ()


@dataclass(frozen=True)
class TransportConfig:
    """A host's `transport:` settings: the keys every transport has. An adapter's settings
    are a subclass of it, with their own defaults (its `TransportAdapter.config`).

    `TransportConfig(kind=..., ...)` builds the settings of the adapter registered as `kind`
    (as `pathlib.Path(...)` builds a PosixPath), so a caller holding settings as a mapping
    needs no adapter's class."""

    kind: str
    root: str
    name: str
    verify: str = setting(
        "size",
        one_of(VERIFY_MODES),
        "how an upload is verified before it is renamed into place: every path, type and "
        "size, or also SHA-256 of every file",
    )

    def __new__(cls, *args: Any, **kwargs: Any) -> TransportConfig:
        if cls is TransportConfig:
            cls = adapter(kwargs["kind"] if "kind" in kwargs else args[0]).config
        return super().__new__(cls)

    def local_folders(self) -> list[tuple[str, Path]]:
        """(key, folder) of the folders on this machine that `caseflow run` makes for this
        transport, the key as in the host's `transport:`."""
        return []


@dataclass(frozen=True)
class TransportAdapter:
    """What a transport registers under its name (entry point group `caseflow.transports`)."""

    config: type[TransportConfig]  # its settings
    open: Callable[[Any], Transport]  # its settings -> the transport of one host
    # a `config.reader.Section` -> its settings; None: they are the core keys alone
    read: Callable[[Any], TransportConfig] | None = None
    tools: tuple[str, ...] = ()  # commands it runs on the host (caseflow check)


def adapter(kind: str) -> TransportAdapter:
    """The transport adapter registered as `kind`; ValueError when none is."""
    try:
        return plugins.load(plugins.TRANSPORTS, kind, TransportAdapter)
    except KeyError:
        raise ValueError(f"unknown transport kind {kind!r}") from None


def kinds() -> list[str]:
    """The names of every registered transport."""
    return list(plugins.registered(plugins.TRANSPORTS))


def make_transport(cfg: TransportConfig) -> Transport:
    """The transport for a host's settings (a `TransportConfig`), by its kind."""
    return adapter(cfg.kind).open(cfg)
