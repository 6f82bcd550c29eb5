"""Large files as byte ranges over parallel channels, as many as the round trip needs.

One SSH channel can have only its window in flight: OpenSSH's sshd grants 2 MiB per channel,
so across a link of 50 ms one channel moves at most 2 MiB / 50 ms = 40 MiB/s however fast the
link is (measured through bench/link_emulator.py: 36 MiB/s). So a large file goes as byte
ranges, each over its own channel into its own remote `dd` (scripts/range.sh), as many at once
as the measured round trip needs to keep `COVER_RATE` in flight, at least `MIN_CHANNELS`
(on loopback two overlap the remote writer and sshd better: 1 GiB in 1.46-1.56 s with two,
1.58-2.04 s with one), at most the transport's `max_channels` (the host's MaxSessions, 10 by
OpenSSH's default, minus what polls and submits need).
"""

from __future__ import annotations

import math
import os
import posixpath
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import PermanentError, TransientError
from . import space_or_permission
from .shell import script
from .tarstream import CHUNK, Counter

WINDOW = 2 * 1024 * 1024       # OpenSSH's channel window (CHAN_SES_WINDOW_DEFAULT)
COVER_RATE = 1024 * 1024 * 1024  # bytes/s to keep in flight: above what one connection
                                 # carries here on loopback (1 GiB in 1.6 s)
MIN_CHANNELS = 2

RANGE = script(__package__, "range.sh")


def channels_for(rtt: float, max_channels: int) -> int:
    """How many channels keep COVER_RATE in flight across a round trip of `rtt` seconds."""
    wanted = math.ceil(rtt * COVER_RATE / WINDOW)
    return max(1, min(max_channels, max(MIN_CHANNELS, wanted)))


@dataclass(frozen=True)
class Piece:
    """Bytes offset..offset+length of the local file `full`, for `remote` in the staging
    folder."""
    full: str
    remote: str
    offset: int
    length: int


def file_times(local_dir: str, entries) -> list[str]:
    """(path, mode, mtime) of each large file, for the commit; checks it is still as scanned."""
    times = []
    for entry in entries:
        full = os.path.join(local_dir, entry.path)
        try:
            st = os.stat(full)
        except OSError as exc:
            raise PermanentError(f"cannot read {full}: {exc.strerror}") from exc
        if st.st_size != entry.size:
            raise TransientError(f"{full} changed since the case was checked; will upload "
                                 "again")
        times += [entry.path, f"{stat.S_IMODE(st.st_mode):o}", str(int(st.st_mtime))]
    return times


def split(local_dir: str, staging: str, wanted: list[tuple[str, int, int]], n: int
          ) -> list[Piece]:
    """The (path, offset, length) still to send, cut into pieces for `n` channels (whole MiB
    but the last of each file)."""
    total = sum(length for _, _, length in wanted)
    part = max(CHUNK, -(-total // n // CHUNK) * CHUNK)
    pieces = []
    for path, offset, length in wanted:
        full = os.path.join(local_dir, path)
        remote = posixpath.join(staging, path)
        end = offset + length
        while offset < end:
            pieces.append(Piece(full, remote, offset, min(part, end - offset)))
            offset += part
    return pieces


def send_all(transport, pieces: list[Piece], n: int, counter: Counter) -> None:
    """Send the pieces over `n` channels at once (each a slot of the transport's channel
    budget while it is open). The first failure stops the others at their next MiB."""
    failed = threading.Event()
    with ThreadPoolExecutor(n, thread_name_prefix="caseflow-range") as pool:
        futures = [pool.submit(transport._guard,
                               lambda p=p: _send(transport, p, counter, failed),
                               "uploading a large file") for p in pieces]
        errors = []
        for f in futures:
            try:
                f.result()
            except Exception as exc:
                failed.set()
                errors.append(exc)
    if errors:  # a permanent reason (a full disk, a file gone) before a transient one
        raise next((e for e in errors if isinstance(e, PermanentError)), errors[0])


def _send(transport, piece: Piece, counter: Counter, failed: threading.Event) -> None:
    if failed.is_set():
        return
    with transport.bulk_channel(["sh", "-c", RANGE, "caseflow", piece.remote,
                                 str(piece.offset), str(piece.length)]) as chan:
        view = memoryview(bytearray(CHUNK))  # sent as slices: see TarStream
        try:
            with open(piece.full, "rb", buffering=0) as f:
                f.seek(piece.offset)
                left = piece.length
                while left and not failed.is_set():
                    n = f.readinto(view[:min(left, CHUNK)])
                    if not n:
                        raise TransientError(f"{piece.full} shrank while it was sent; will "
                                             "upload again")
                    chan.sendall(view[:n])
                    counter.add(n)
                    left -= n
        except (PermissionError, FileNotFoundError) as exc:
            raise PermanentError(f"cannot read {piece.full}: {exc.strerror}") from exc
        if left:
            return  # another piece failed; this one stops, unsent (its dd fails)
        chan.shutdown_write()  # dd reads until this EOF: no race (see ssh.py's _exec)
        _, err = transport._drain(chan)
        rc = chan.recv_exit_status()
    transport.commands += 1
    if rc != 0:
        text = err.decode("utf-8", "replace")
        raise space_or_permission(text, f"upload to {transport.name}") or \
            TransientError(f"writing {piece.remote} on {transport.name} failed (exit {rc}): "
                           f"{text.strip()[:300]}")
