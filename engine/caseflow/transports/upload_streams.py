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
import stat
import threading
from pathlib import Path

from ..errors import HostError, PermanentError, TransientError
from . import space_or_permission
from .shell import script
from .ssh_connection import classify
from .tarstream import ABORT, Counter, NotAFile, TarWriter
from .upload_check import difference, parse_listing
from .upload_pump import Job, pump

WINDOW = 2 * 1024 * 1024  # OpenSSH's channel window (CHAN_SES_WINDOW_DEFAULT)
COVER_RATE = 1024 * 1024 * 1024  # bytes/s to keep in flight: above what one connection
# carries here on loopback (1 GiB in 1.6 s)

UNPACK = script(__package__, "unpack.sh", "listing.sh", "mark.sh")
STREAM_BYTES = 4 * 1024 * 1024  # a tar stream of its own per this much data, at most
# streams at least, where there is the data for them, whatever the round trip: several remote
# tars overlap each other and sshd (10,000 files of 4 KiB over loopback on this 2-core
# machine, five runs each: median 1.03 s with one stream, 0.91 s with four, 0.96 s with eight)
MIN_STREAMS = 4


def stream_count(rtt: float, local_dir: Path, entries, max_channels: int) -> int:
    """Streams at once for `entries`: enough windows in flight for the round trip, one per
    STREAM_BYTES at most, one only when a folder of the case cannot be written by its owner
    (another stream could not write into it once one tar has set its mode)."""
    data = sum(e.size + 512 for e in entries)
    wanted = -(-int(rtt * COVER_RATE) // WINDOW)
    n = max(1, min(max_channels, max(MIN_STREAMS, wanted), data // STREAM_BYTES))
    if n > 1:
        for e in entries:
            if e.kind == "d":
                mode = os.lstat(local_dir / e.path).st_mode
                if mode & (stat.S_IWUSR | stat.S_IXUSR) != stat.S_IWUSR | stat.S_IXUSR:
                    return 1
    return n


def needs_round_trip(entries, max_channels: int) -> bool:
    """Whether stream_count depends on the round trip: only where there is the data for
    more than MIN_STREAMS streams (and the channels for them)."""
    data = sum(e.size + 512 for e in entries)
    return min(max_channels, data // STREAM_BYTES) > MIN_STREAMS


class Streams:
    """Channels into scripts/unpack.sh, opened at once (each in the channel budget) while the
    caller finds out what they are to carry: `grow()` opens more (they join as they open),
    `send()` streams the files (from one thread: upload_pump.py), `abort()` ends the streams
    unsent (their tar fails: nothing is renamed). `prepare` (the stale-staging sweep's
    minutes, "0": none): the one stream of a small case prepares the staging folder itself
    (no prepare command).

    The files are not cut into parts beforehand: each stream takes the next files whenever
    its window is open (a buffer of CHUNK at a time, so a folder's files stay mostly
    together), and a stream that joins late takes what is left. Each stream's first line
    says how many there are in all (the last to end verifies): streams opened once the round
    trip is known join without the others waiting for them (a round trip less across 50 ms:
    the first streams open with the prepare command, the round trip is measured meanwhile).
    """

    def __init__(
        self,
        transport,
        n: int,
        staging: str,
        target: str,
        digest: str,
        token: str,
        expected: set,
        prepare: str | None = None,
    ):
        self.t = transport
        self.expected = expected
        self.argv = [
            "sh",
            "-c",
            UNPACK,
            "caseflow",
            staging,
            target,
            digest,
            token,
        ]
        self.extra = [prepare] if prepare is not None else []
        self.openings = [self._open(0, n, wait=True)]
        self.ended = False

    def _open(self, first: int, n: int, wait: bool) -> Opening:
        return Opening(
            self.t,
            n,
            lambda i, got: [*self.argv, str(first + i), *self.extra],
            wait=wait,
        )

    @property
    def count(self) -> int:
        return sum(len(o.chans) for o in self.openings)

    def grow(self, n: int) -> None:
        """Open channels for up to `n` streams in all, as many as the budget has free now."""
        if n > self.count and not self.ended:
            more = self._open(self.count, n - self.count, wait=False)
            if more.chans:
                self.openings.append(more)

    def send(self, local_dir: Path, entries: list, counter: Counter, sums: dict | None) -> str:
        """Stream `entries`; what the streams printed. Every channel is closed (its budget
        given back) on every way out."""
        self.ended = True
        first, later = self.openings[0], self.openings[1:]
        base = os.fspath(local_dir)
        files = iter(entries)  # shared: each stream takes the next ones
        head = b"%d\n" % self.count

        def job(chan) -> Job:
            return Job(chan, _stream(head, TarWriter().chunks(base, files, sums)))

        try:
            jobs = [job(chan) for chan in first.channels()]
            joining = _Joining(later, job)
            try:
                pump(jobs, counter, joining=joining)
            finally:
                # (the channels of an opening that never joined are ended unsent: their tars
                # fail, and with them the commit, as the streams' count included them)
                for opening in joining.openings:
                    jobs += [_unsent(chan) for chan in opening.opened()]
                ends = finish(self.t, jobs, ABORT)
        finally:
            self._close()
        for j in jobs:  # a local file's problem is the case's, before the connection's
            if j.local_error is not None and not isinstance(j.local_error, _NotSent):
                raise local_problem(j.local_error, local_dir, self.t.name)
        found = [
            stream_problem(self.t, j, end, self.expected)
            for j, end in zip(jobs, ends, strict=True)
            if not isinstance(j.local_error, _NotSent)  # ended for another's failure
        ]
        problems = [p for p in found if p is not None]
        if problems:
            raise worst(problems)
        return "".join(out.decode("utf-8", "replace") for _, out, _ in ends)

    def abort(self) -> None:
        """End the streams if they were not sent (idempotent; errors are not raised)."""
        if self.ended:
            return
        self.ended = True
        try:
            with contextlib.suppress(Exception):
                finish(self.t, [_unsent(c) for o in self.openings for c in o.opened()], ABORT)
        finally:
            self._close()

    def _close(self) -> None:
        """Close every opening's channels (each gives its budget back), whatever fails."""
        errors = []
        for opening in self.openings:
            try:
                opening.close()
            except Exception as exc:  # noqa: BLE001 - the others are closed all the same
                errors.append(exc)
        if errors:
            raise errors[0]


class _NotSent(Exception):
    pass


def _unsent(chan) -> Job:
    job = Job(chan, iter(()))
    job.local_error = _NotSent("not sent")
    return job


def _stream(head: bytes, chunks):
    """A stream's data: its first line (how many streams there are), then its tar stream."""
    yield memoryview(head), 0
    yield from chunks


class _Joining:
    """Openings still under way, for pump(): the jobs of those whose channels are all open."""

    def __init__(self, openings: list, job):
        self.openings = list(openings)
        self.job = job

    @property
    def pending(self) -> bool:
        return bool(self.openings)

    def ready(self) -> list[Job]:
        jobs = []
        for opening in list(self.openings):
            if opening.done():
                self.openings.remove(opening)
                jobs += [self.job(chan) for chan in opening.channels()]
        return jobs


class Opening:
    """Up to `wanted` channels with a command started on each (`argv_of(i, n)`, n being how
    many are opened), as many as the transport's channel budget gives (at least one), opened
    at once (two round trips each); `channels()` waits for them (raising the first failure, a
    permanent one first), `close()` closes them and gives the budget back."""

    def __init__(self, transport, wanted: int, argv_of, wait: bool = True):
        self.t = transport
        budget = transport.channel_budget()
        # (waiting for a unit is bounded: one that never comes back must not hold the upload,
        # and with it its case, for good)
        n = budget.take(max(1, wanted), wait=wait, timeout=transport.cfg.command_timeout)
        self.chans: list = [None] * n
        self.errors: list[BaseException | None] = [None] * n
        self.threads: list[threading.Thread] = []
        try:
            for i in range(n):
                thread = threading.Thread(
                    target=self._open, args=(i, argv_of(i, n)), daemon=True, name="caseflow-open"
                )
                thread.start()  # from here on, the thread gives its unit back if it fails
                self.threads.append(thread)
        except BaseException:
            budget.release(n - len(self.threads))  # the units of the threads never started
            self.close()
            raise

    def _open(self, i: int, argv: list[str]) -> None:
        try:
            several = len(self.chans) > 1
            self.chans[i] = self.t.channels.guard(
                lambda: self.t.bulk_channel(argv, several), "uploading"
            )
        except BaseException as exc:  # handed to the caller
            self.errors[i] = exc
            self.t.channel_budget().release()

    def opened(self) -> list:
        """The channels that opened (waiting for the rest to open or fail), errors aside."""
        for t in self.threads:
            t.join()
        return [chan for chan in self.chans if chan is not None]

    def done(self) -> bool:
        """Whether every channel has opened (or failed to)."""
        return not any(t.is_alive() for t in self.threads)

    def channels(self) -> list:
        for t in self.threads:
            t.join()
        errors = [e for e in self.errors if e is not None]
        if errors:
            self.close()
            raise next((e for e in errors if isinstance(e, PermanentError)), errors[0])
        return self.chans

    def close(self) -> None:
        """Close the channels that opened, each giving its unit back (once: idempotent)."""
        for t in self.threads:
            t.join()
        for i, chan in enumerate(self.chans):
            if chan is not None:
                self.chans[i] = None
                self.t.close_bulk(chan)


def finish(t, jobs: list[Job], abort: bytes | None) -> list[tuple[int, bytes, bytes]]:
    """End the jobs' channels: after data that is not complete, `abort` (if given) so that the
    remote side fails; then the write side's EOF (the remote side reads until it, so it cannot
    race with the channel's close: see ssh.py's _exec); then each command's output and exit
    code (-1 when the connection is gone). Every channel's end is sent before any answer is
    waited for: ended one after the other, each cost a round trip (8 streams across 50 ms:
    0.5 s of a 1.85 s upload of 10,000 small files).

    Raises nothing for a channel's failure: an error of the connection is the job's
    `send_error`, the transport's own verdict (the `openssh` transport's NeedsLogin when its
    master was killed, a timeout) its `end_error`, for the caller to raise once every channel
    is closed (raised from here, it left the channels of the other jobs open and their units
    of the channel budget taken for good)."""
    broken: list[bool] = []
    for job in jobs:
        chan = job.chan
        try:
            if not job.complete and job.send_error is None and abort is not None:
                chan.sendall(abort)
            if job.send_error is None or not (chan.closed or chan.eof_received):
                chan.shutdown_write()
            broken.append(False)
        except (TimeoutError, OSError, EOFError) as exc:
            if job.send_error is None:
                job.send_error = exc
            broken.append(True)
        except Exception as exc:  # noqa: BLE001 - the caller raises it (see above)
            job.end_error = exc
            broken.append(True)
    ends = []
    for job, lost in zip(jobs, broken, strict=True):
        if lost:
            ends.append((-1, b"", b""))
            continue
        try:
            out, err = t.channels.drain(job.chan)
            rc = job.chan.recv_exit_status()
        except (TimeoutError, OSError, EOFError) as exc:
            if job.send_error is None:
                job.send_error = exc
            ends.append((-1, b"", b""))
            continue
        except Exception as exc:  # noqa: BLE001 - the caller raises it (see above)
            job.end_error = exc
            ends.append((-1, b"", b""))
            continue
        t.commands += 1
        ends.append((rc, out, err))
    return ends


def worst(problems: list[Exception]) -> Exception:
    """The one of the streams' problems to raise: a permanent reason (a full disk) first, then
    the host's (a master that needs a login: the host pauses, no attempt is charged), then
    the first."""
    for kind in (PermanentError, HostError):
        for p in problems:
            if isinstance(p, kind):
                return p
    return problems[0]


def local_problem(exc: BaseException, local_dir, name: str) -> Exception:
    """What a local file's error means for the case."""
    if isinstance(exc, (PermanentError, TransientError)):
        return exc
    if isinstance(exc, NotAFile):
        return PermanentError(str(exc))
    if isinstance(exc, PermissionError) or (isinstance(exc, FileNotFoundError) and exc.filename):
        return PermanentError(f"cannot read {exc.filename}: {exc.strerror}")
    if isinstance(exc, OSError):  # e.g. a file that shrank while it was read: try again later
        return TransientError(
            f"reading the case folder {local_dir} for the upload to {name} failed: {exc}"
        )
    return exc if isinstance(exc, Exception) else TransientError(str(exc))


def stream_problem(t, job: Job, end: tuple[int, bytes, bytes], expected: set) -> Exception | None:
    """What went wrong with one stream, if anything: the host's complaint (a full disk is
    permanent), a lost connection, a copy that did not verify."""
    rc, out, err = end
    text = err.decode("utf-8", "replace")
    if rc == 0 and job.send_error is None and job.end_error is None:
        return None
    if job.end_error is not None:  # the transport's own verdict on the channel's end
        return classify(job.end_error, f"uploading to {t.name}")
    problem = space_or_permission(text, f"upload to {t.name}")
    if problem:
        return problem
    if job.send_error is not None:
        return classify(job.send_error, f"uploading to {t.name}")
    if rc == 4:
        got = parse_listing(out.decode("utf-8", "surrogateescape"))
        return TransientError(
            f"upload to {t.name} did not verify ({difference(expected, got)}); will upload again"
        )
    if rc == -1:
        return TransientError(f"the connection to {t.name} was lost during the upload")
    return TransientError(f"unpacking on {t.name} failed (exit {rc}): {text.strip()[:300]}")
