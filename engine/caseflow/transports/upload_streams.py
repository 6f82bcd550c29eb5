"""The case's files (all but the large ones) as tar streams into remote `tar -x`, several at
once across a long link, their channels opened while the first command still runs.

One channel can have only its window in flight (2 MiB with OpenSSH's sshd: 40 MiB/s at 50
ms), so across a long link the files go as several streams, contiguous parts of about equal
bytes, each over its own channel into its own remote tar (scripts/unpack.sh), as many as keep
COVER_RATE in flight over the measured round trip, at most one per STREAM_BYTES of data and
the transport's `max_channels`. The channels are opened (two round trips) at the same time as
the prepare command runs, not after it. With the digest of the expected listing, the stream
that ends last verifies the folder and renames it into place.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import PermanentError, TransientError
from . import space_or_permission
from .shell import script
from .ssh_connection import classify
from .tarstream import Counter, NotAFile, SendFailed, TarStream
from .upload_check import difference, parse_listing
from .upload_ranges import COVER_RATE, WINDOW

UNPACK = script(__package__, "unpack.sh", "listing.sh", "mark.sh")
STREAM_BYTES = 4 * 1024 * 1024  # a tar stream of its own per this much data, at most


def stream_count(rtt: float, local_dir: Path, entries, max_channels: int) -> int:
    """Streams at once for `entries`: enough windows in flight for the round trip, one per
    STREAM_BYTES at most, one only when a folder of the case cannot be written by its owner
    (another stream could not write into it once one tar has set its mode)."""
    data = sum(e.size + 512 for e in entries)
    wanted = -(-int(rtt * COVER_RATE) // WINDOW)
    n = max(1, min(max_channels, wanted, data // STREAM_BYTES))
    if n > 1:
        for e in entries:
            if e.kind == "d":
                mode = os.lstat(local_dir / e.path).st_mode
                if mode & (stat.S_IWUSR | stat.S_IXUSR) != stat.S_IWUSR | stat.S_IXUSR:
                    return 1
    return n


def partition(entries: list, n: int) -> list[list]:
    """`n` contiguous parts of about equal bytes (a folder's files stay mostly together);
    parts may be empty (an empty tar stream is fine)."""
    parts: list[list] = [[] for _ in range(max(1, n))]
    total = sum(e.size + 512 for e in entries)
    done, i = 0, 0
    for e in entries:
        while i < len(parts) - 1 and done >= total * (i + 1) / len(parts):
            i += 1
        parts[i].append(e)
        done += e.size + 512
    return parts


class Streams:
    """`n` channels into scripts/unpack.sh, opened at once (each in the channel budget) and
    waiting for what they are to carry: `send()` streams the parts, `abort()` ends the
    streams unsent (their tar fails: nothing is renamed)."""

    def __init__(self, transport, n: int, staging: str, target: str, digest: str, token: str,
                 expected: set):
        self.t = transport
        self.expected = expected
        self.n = n
        self.go = threading.Event()
        self.parts: list[list] | None = None
        self.local_dir: Path | None = None
        self.counter: Counter | None = None
        self.sums: dict | None = None
        self.pool = ThreadPoolExecutor(n, thread_name_prefix="caseflow-tar")
        self.futures = [self.pool.submit(
            transport._guard, lambda i=i: self._run(i, ["sh", "-c", UNPACK, "caseflow", staging,
                                                        target, digest, token, str(n), str(i)]),
            "uploading") for i in range(n)]

    def _run(self, i: int, argv: list[str]) -> str:
        with self.t.bulk_channel(argv) as chan:
            self.go.wait()
            if self.parts is None:
                with contextlib.suppress(SendFailed, OSError, EOFError):
                    TarStream(chan, Counter(None, 0)).abort()
                    chan.shutdown_write()
                    self.t._drain(chan)
                return ""
            return stream_into(self.t, chan, self.local_dir, self.parts[i], self.counter,
                               self.sums, self.expected)

    def send(self, local_dir: Path, entries: list, counter: Counter, sums: dict | None) -> str:
        """Stream `entries` (split into the parts); what the streams printed."""
        self.local_dir, self.counter, self.sums = local_dir, counter, sums
        self.parts = partition(entries, self.n)
        self.go.set()
        return self._gather()

    def abort(self) -> None:
        """End the streams if they were not sent (idempotent; errors are not raised)."""
        if not self.go.is_set():
            self.go.set()
            with contextlib.suppress(Exception):
                self._gather()
        self.pool.shutdown(wait=True)

    def _gather(self) -> str:
        results, errors = [], []
        for f in self.futures:
            try:
                results.append(f.result())
            except Exception as exc:
                errors.append(exc)
        self.pool.shutdown(wait=True)
        if errors:  # a permanent reason (a full disk, a file gone) before a transient one
            raise next((e for e in errors if isinstance(e, PermanentError)), errors[0])
        return "".join(results)


def stream_into(t, chan, local_dir: Path, entries: list, counter: Counter,
                sums: dict | None, expected: set) -> str:
    """Send `entries` as one tar stream into `chan` (the remote unpack.sh); what it printed.
    `expected` is the whole listing (what a failed verification is compared with)."""
    stream_error: BaseException | None = None
    local_error: Exception | None = None
    tar = TarStream(chan, counter)
    try:
        base = os.fspath(local_dir)
        for entry in entries:
            tar.add(base, entry, sums)
        tar.close()
    except SendFailed as exc:
        stream_error = exc.__cause__
    except NotAFile as exc:
        local_error = PermanentError(str(exc))
    except OSError as exc:  # reading a local file
        if isinstance(exc, PermissionError) or (isinstance(exc, FileNotFoundError) and
                                                exc.filename):
            local_error = PermanentError(f"cannot read {exc.filename}: {exc.strerror}")
        else:  # e.g. a file that shrank while it was read: try again later
            local_error = TransientError(f"reading the case folder {local_dir} for the "
                                         f"upload to {t.name} failed: {exc}")
    if local_error is not None:  # the remote tar fails: nothing is renamed
        with contextlib.suppress(SendFailed, OSError, EOFError):
            tar.abort()
            chan.shutdown_write()
            t._drain(chan)
        raise local_error
    try:
        # The remote tar reads until this EOF, so it cannot race with the channel's close
        # (see ssh.py's _exec); after a failed send, only while the remote side has not ended.
        if stream_error is None or not (chan.closed or chan.eof_received):
            chan.shutdown_write()
        out, err = t._drain(chan)
        rc = chan.recv_exit_status()
    except (OSError, EOFError, socket.timeout) as exc:
        raise classify(stream_error or exc, f"uploading to {t.name}") from exc
    t.commands += 1
    text = err.decode("utf-8", "replace")
    if rc != 0 or stream_error is not None:
        problem = space_or_permission(text, f"upload to {t.name}")
        if problem:
            raise problem
        if stream_error is not None:
            raise classify(stream_error, f"uploading to {t.name}")
        if rc == 4:
            got = parse_listing(out.decode("utf-8", "surrogateescape"))
            raise TransientError(f"upload to {t.name} did not verify "
                                 f"({difference(expected, got)}); "
                                 "will upload again")
        raise TransientError(f"unpacking on {t.name} failed (exit {rc}): {text.strip()[:300]}")
    return out.decode("utf-8", "replace")
