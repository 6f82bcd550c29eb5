"""Large files as byte ranges over parallel channels, as many as the round trip needs.

One SSH channel can have only its window in flight: OpenSSH's sshd grants 2 MiB per channel,
so across a link of 50 ms one channel moves at most 2 MiB / 50 ms = 40 MiB/s however fast the
link is (measured through bench/link_emulator.py: 36 MiB/s). So a large file goes as byte
ranges over parallel channels into remote `dd` (scripts/range.sh), as many channels at once
as the measured round trip needs to keep `COVER_RATE` in flight, at least `MIN_CHANNELS`
(on loopback several overlap the remote writers and sshd: 1 GiB on this 2-core machine, three
runs each, median 5.15 s with two channels, 4.53 s with four, 4.41 s with eight; earlier, on
another machine, 1.46-1.56 s with two, 1.58-2.04 s with one), at most the transport's
`max_channels` (the host's MaxSessions, 10 by OpenSSH's default, minus what polls and submits
need).
"""

from __future__ import annotations

import math
import os
import posixpath
import stat
from dataclasses import dataclass

from ..errors import PermanentError, TransientError
from . import space_or_permission
from .shell import script
from .ssh_connection import classify
from .tarstream import CHUNK, Counter
from .upload_pump import Job, pump
from .upload_streams import COVER_RATE, WINDOW, Opening, finish, local_problem, worst

MIN_CHANNELS = 4

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
            raise TransientError(f"{full} changed since the case was checked; will upload again")
        times += [entry.path, f"{stat.S_IMODE(st.st_mode):o}", str(int(st.st_mtime))]
    return times


def split(local_dir: str, staging: str, wanted: list[tuple[str, int, int]], n: int) -> list[Piece]:
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
    """Send the pieces over `n` channels at once (each within the transport's channel
    budget), each channel carrying its share of the pieces one after the other into one remote
    script; all from one thread (upload_pump.py). The first failure stops the others."""
    opening = Opening(
        transport,
        min(n, len(pieces)),
        lambda i, got: [
            "sh",
            "-c",
            RANGE,
            "caseflow",
            *[x for p in _shares(pieces, got)[i] for x in (p.remote, str(p.offset), str(p.length))],
        ],
    )
    try:  # every channel closed (its budget unit given back) on every way out
        shares = _shares(pieces, len(opening.chans))
        chans = opening.channels()
        jobs = [Job(chan, _chunks(share)) for chan, share in zip(chans, shares, strict=True)]
        try:
            pump(jobs, counter)
        finally:
            ends = finish(transport, jobs, None)
    finally:
        opening.close()
    for job in jobs:  # a local file's problem is the case's, before the connection's
        if job.local_error is not None:
            raise local_problem(job.local_error, "", transport.name)
    problems: list[Exception] = []
    for job, (rc, _, err) in zip(jobs, ends, strict=True):
        if rc == 0 and job.send_error is None and job.end_error is None:
            continue
        if job.end_error is not None:  # the transport's own verdict on the channel's end
            problems.append(classify(job.end_error, f"uploading to {transport.name}"))
            continue
        text = err.decode("utf-8", "replace")
        problems.append(
            space_or_permission(text, f"upload to {transport.name}")
            or (
                classify(job.send_error, f"uploading to {transport.name}")
                if job.send_error is not None
                else TransientError(
                    f"writing a large file on {transport.name} failed (exit {rc}): "
                    f"{text.strip()[:300]}"
                )
            )
        )
    if problems:
        raise worst(problems)


def _shares(pieces: list[Piece], n: int) -> list[list[Piece]]:
    """The pieces in `n` shares of about equal bytes (the largest first, to the least)."""
    shares: list[list[Piece]] = [[] for _ in range(max(1, n))]
    loads = [0] * len(shares)
    for piece in sorted(pieces, key=lambda p: (-p.length, p.remote, p.offset)):
        i = loads.index(min(loads))
        shares[i].append(piece)
        loads[i] += piece.length
    return shares


def _chunks(share: list[Piece]):
    """The bytes of the pieces, one after the other, read into one buffer (sent as memoryview
    slices: see tarstream.TarWriter)."""
    view = memoryview(bytearray(CHUNK))
    for piece in share:
        try:
            with open(piece.full, "rb", buffering=0) as f:
                f.seek(piece.offset)
                left = piece.length
                while left:
                    n = f.readinto(view[: min(left, CHUNK)])
                    if not n:
                        raise TransientError(
                            f"{piece.full} shrank while it was sent; will upload again"
                        )
                    yield view[:n], n
                    left -= n
        except (PermissionError, FileNotFoundError) as exc:
            raise PermanentError(f"cannot read {piece.full}: {exc.strerror}") from exc
