"""The upload of the transports that run commands on channels: staged, verified, renamed into
place, resumed after a cut.

A case goes into a staging folder next to its target. The first command (scripts/prepare.sh)
lists the target and what an earlier, interrupted attempt left in the staging folder; what of
that still agrees with the case stays (upload_resume.py). The rest goes as tar streams
(tarstream.TarWriter) into remote `tar -x`, several at once across a long link, and files of
`large_file_bytes` or more as byte ranges over parallel channels (upload_ranges.py). The
staging folder is then verified (the listing: every path, type and size; SHA-256 of every file
with `verify: checksum`) and only then renamed into place, in the same command as the last
data when it can (scripts/unpack.sh), else in one more (scripts/commit.sh). The job never sees
a partial folder; a failed attempt leaves the staging folder for the next one, and one that no
case resumes is removed (`discard_upload`, and after STALE_MINUTES by any later upload).

`StagedUpload` is the base of the transport that reaches a host through channels
(ssh.ChannelTransport); what it uses of it: `cfg` (`verify`, `large_file_bytes`,
`max_channels`), `channels` (the channel port, channels.Channels: `open`, `bulk`, `guard`,
`drain`), `run` (a command, with retries) and the `commands` counter.
"""

from __future__ import annotations

import logging
import os
import posixpath
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..casefolder import Manifest
from ..errors import PermanentError, TransientError
from . import Transport, check_room, space_or_permission, upload_ranges, upload_resume
from .shell import script
from .tarstream import Counter, Progress
from .upload_check import (
    difference,
    listing_digest,
    local_sums,
    parse_listing,
    parse_sums,
    sum_line,
)
from .upload_streams import Streams, local_problem, needs_round_trip, stream_count

if TYPE_CHECKING:
    from .channels import Channels
    from .ssh_settings import SSHConfig

log = logging.getLogger("caseflow.ssh")

R = TypeVar("R")


PREPARE = script(__package__, "prepare.sh", "listing.sh")
RESUME = script(__package__, "resume.sh")
COMMIT = script(__package__, "commit.sh", "listing.sh", "mark.sh")
SUMS = script(__package__, "sums.sh")

STALE_MINUTES = 7 * 24 * 60  # a staging folder no attempt touched for a week: no case resumes it
# A case of at most this many bytes, sent fresh, goes as one command: its one stream prepares
# the staging folder itself, instead of a prepare command first (there is nothing worth
# resuming in it, and a full disk fails its tar as it fails the prepare's check). One round
# trip and one remote session less per case: on this 2-core machine every session is ~12 ms
# of the host's CPU (sshd, the shell), and the pipeline bench ran 5 per tiny case.
ONE_COMMAND_BYTES = 1024 * 1024
SWEEP_SECONDS = 3600.0  # how often an upload looks for such folders (once per transport first)
RTT_KEEP = 300.0  # seconds a measured round trip is used (the default round_trip())
_budget_lock = threading.Lock()


class StagedUpload(Transport):
    """The upload steps of a transport that runs commands on channels (see above)."""

    cfg: SSHConfig
    channels: Channels
    commands: int

    def channel(self, argv: Sequence[str]) -> Any:
        """A new channel with the command `argv` started on it (its stdin is the channel:
        the caller sends, then shuts the channel's write side down)."""
        return self.channels.open(shlex.join(argv))

    # -- what it uses of the transport, beyond the basics ------------------------------------
    def round_trip(self) -> float:
        """Seconds of one round trip to the host (connecting first if need be). This default
        times a command (a channel opened, then the command started: two round trips) and
        keeps the answer for RTT_KEEP seconds; a transport may do better."""
        kept = self.__dict__.get("_rtt_kept")
        if kept is not None and time.monotonic() - kept[0] < RTT_KEEP:
            return kept[1]
        t0 = time.monotonic()
        self.run(["true"])
        rtt = (time.monotonic() - t0) / 2
        self._rtt_kept = (time.monotonic(), rtt)
        return rtt

    def channel_budget(self) -> ChannelBudget:
        """At most `max_channels` bulk channels open at once on this transport, all uploads
        together (the host refuses sessions beyond its MaxSessions)."""
        with _budget_lock:
            budget = self.__dict__.get("_bulk_budget")
            if budget is None:
                budget = self._bulk_budget = ChannelBudget(self.cfg.max_channels, self.name)
            return budget

    def bulk_channel(self, argv: Sequence[str], several: bool) -> Any:
        """A channel for an upload's data (upload_streams.Opening; `several`: one of several
        opened at once)."""
        return self.channels.bulk(shlex.join(argv), several)

    def close_bulk(self, chan: Any) -> None:
        """Close a channel opened within the budget (upload_streams.Opening); closing one of
        a lost connection does not raise (the error was seen when it was used)."""
        try:
            chan.close()
        except Exception as exc:  # noqa: BLE001 - paramiko raises EOFError, OSError, ...
            log.debug("closing a channel to %s: %s", self.name, exc)
        finally:
            self.channel_budget().release()

    def _call(self, argv: Sequence[str], stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        """A command, its exit code and raw output (names need not be UTF-8). A script run
        this way reads all of its stdin first, or takes none (`exec < /dev/null`, when
        `stdin` is None: no EOF is sent, see prepare.sh)."""
        chan = self.channel(argv)
        if stdin is not None:
            try:
                if stdin:
                    chan.sendall(memoryview(stdin))
                chan.shutdown_write()
            except BaseException:
                chan.close()
                raise
        return self._answer(chan)

    def _answer(self, chan: Any) -> tuple[int, bytes, bytes]:
        """The exit code and raw output of the command started on `chan`, which is closed."""
        try:
            out, err = self.channels.drain(chan)
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        self.commands += 1
        return rc, out, err

    # -- checksums of a complete copy ----------------------------------------------------------
    def checksums(self, path: str) -> dict[str, str]:
        res = self.run(["sh", "-c", SUMS, "caseflow", path])
        if res.returncode != 0:
            raise TransientError(f"sha256sum in {path} failed: {res.stderr.strip()[:300]}")
        return parse_sums(res.stdout)

    # -- upload ------------------------------------------------------------------------------
    def upload_dir(
        self,
        local_dir: Path,
        remote_path: str,
        manifest: Manifest,
        progress: Progress | None = None,
    ) -> bool:
        """A small case (ONE_COMMAND_BYTES) is one command: its stream prepares the staging
        folder, unpacks, verifies and renames (one round trip before its data). A larger
        fresh upload of small files: the prepare command, while the tar streams' channels
        open (and, first, the round trip is measured where the number of streams depends on
        it), then the streams, the last of which verifies and renames. Large files and
        checksums add the byte ranges and a last command that verifies and renames; a
        resumed attempt, a command that checks what is there."""
        local_dir = Path(local_dir)
        expected = manifest.as_set()
        checksum = self.cfg.verify == "checksum"
        parent, base = posixpath.split(remote_path)
        staging = posixpath.join(parent, f".staging-{base}")
        large = {
            e.path: e
            for e in manifest.entries
            if e.kind == "f" and e.size >= self.cfg.large_file_bytes
        }
        one_pass = not large and not checksum  # else: verify and rename in one more command
        tarred = [e for e in manifest.entries if e.path not in large]
        # (the listing's digest, 6-16 ms for 10,000 files, while the connection is waited for)
        digest = _Background(lambda: listing_digest(expected) if one_pass else "-")
        if one_pass and manifest.size_bytes <= ONE_COMMAND_BYTES:  # one stream, no round trip
            streams = Streams(
                self,
                1,
                staging,
                remote_path,
                digest.result(),
                secrets.token_hex(4),
                expected,
                prepare=str(self._sweep_minutes()),
            )
            out = streams.send(local_dir, tarred, Counter(progress, manifest.size_bytes), None)
            if out.strip() == "present":  # a copy verified earlier is there
                return False
            if "committed" not in out:
                raise TransientError(
                    f"upload to {self.name}: the stream did not verify the copy; will upload again"
                )
            return True
        # The prepare command first: opening its channel connects (a host problem, such as an
        # unknown host key, is reported as itself). While it runs, the streams that do not
        # depend on the round trip open, and the round trip is measured if more might be
        # wanted (or large files' channels follow it); those open once it is known and join
        # the streams as they come. Across 50 ms the data began 6 round trips after the
        # login (measuring, then the prepare command and the channels at once), now 2.
        preparing = self.channels.guard(
            lambda: self._start_prepare(remote_path, staging), "staging"
        )
        measuring = None
        if large or needs_round_trip(tarred, self.cfg.max_channels):
            measuring = _Background(
                lambda: self.channels.guard(self.round_trip, "measuring the round trip")
            )
        try:
            streams = Streams(
                self,
                stream_count(0.0, local_dir, tarred, self.cfg.max_channels),
                staging,
                remote_path,
                digest.result(),
                secrets.token_hex(4),
                expected,
            )
        except BaseException:
            preparing.close()
            if measuring is not None:
                measuring.wait()
            raise
        rtt = 0.0
        try:
            prepared = self.channels.guard(lambda: self._prepared(preparing, staging), "staging")
            if measuring is not None:
                rtt = measuring.result()
                streams.grow(stream_count(rtt, local_dir, tarred, self.cfg.max_channels))
            if prepared.target == expected and (
                not checksum or self.checksums(remote_path) == local_sums(local_dir, manifest)
            ):
                streams.abort()
                self._discard(staging)
                return False
            check = upload_resume.plan_check(local_dir, manifest, prepared.staged, set(large))
            kept_files: set[str] = set()
            kept_blocks: dict[str, list[bool]] = {}
            if check:
                kept_files, kept_blocks = self.channels.guard(
                    lambda: self._check_staged(local_dir, staging, check),
                    "checking the staging folder",
                )
            wanted = []  # (path, offset, length) of the large files still to send
            kept_bytes = sum(e.size for e in manifest.entries if e.path in kept_files)
            for path, entry in large.items():
                todo = upload_resume.missing_ranges(entry.size, kept_blocks.get(path, []))
                kept_bytes += entry.size - sum(length for _, length in todo)
                wanted += [(path, off, length) for off, length in todo]
            if prepared.free_kib is not None:
                # what an earlier attempt left counts as room, not only what of it is kept: a
                # file cut short is written again in its place, one not the case's is removed
                # (counting only the kept bytes failed a resumed case that fits when the cut
                # left a partly written file bigger than the disk's headroom)
                staged_bytes = sum(
                    size for kind, size, _ in prepared.staged.values() if kind == "f"
                )
                room = prepared.free_kib * 1024 + max(kept_bytes, staged_bytes)
                check_room(manifest, room, f"{self.name}:{parent}")
            counter = Counter(progress, manifest.size_bytes)
            if kept_bytes:
                counter.add(kept_bytes)
                log.info(
                    "the upload to %s:%s resumes: %d of %d bytes are there",
                    self.name,
                    remote_path,
                    kept_bytes,
                    manifest.size_bytes,
                )
            sums: dict[str, str] | None = {} if checksum else None
            out = streams.send(
                local_dir, [e for e in tarred if e.path not in kept_files], counter, sums
            )
            if one_pass:
                if "committed" not in out:
                    raise TransientError(
                        f"upload to {self.name}: no stream verified the copy; will upload again"
                    )
                return True
            if wanted:
                n = upload_ranges.channels_for(rtt, self.cfg.max_channels)
                upload_ranges.send_all(
                    self, upload_ranges.split(os.fspath(local_dir), staging, wanted, n), n, counter
                )
            times = upload_ranges.file_times(os.fspath(local_dir), large.values())
        except PermanentError:
            streams.abort()
            self._discard(staging)  # e.g. a full disk: do not leave the half copy there
            raise
        finally:
            streams.abort()
        if sums is not None:
            sums.update(
                local_sums(
                    local_dir,
                    Manifest(
                        tuple(
                            e for e in manifest.entries if e.path in large or e.path in kept_files
                        )
                    ),
                )
            )
        self._commit(staging, remote_path, expected, sums, times)
        return True

    def discard_upload(self, remote_path: str) -> None:
        """Remove the staging folder of an upload to `remote_path` that no case resumes."""
        parent, base = posixpath.split(remote_path)
        staging = posixpath.join(parent, f".staging-{base}")
        res = self.run(["rm", "-rf", "--", staging])
        if res.returncode != 0:
            raise space_or_permission(res.stderr, f"removing {staging}") or TransientError(
                f"removing {staging} failed: {res.stderr.strip()[:300]}"
            )

    def _discard(self, path: str) -> None:
        try:
            self.run(["rm", "-rf", "--", path])
        except (TransientError, PermanentError) as exc:
            log.warning("could not remove %s on %s: %s", path, self.name, exc)

    def _sweep_minutes(self) -> int:
        """STALE_MINUTES when this upload is to sweep away stale staging folders (once per
        SWEEP_SECONDS per transport), else 0."""
        now = time.monotonic()
        last = self.__dict__.get("_swept_at")
        if last is not None and now - last < SWEEP_SECONDS:
            return 0
        self._swept_at = now
        return STALE_MINUTES

    def _start_prepare(self, target: str, staging: str) -> Any:
        """The channel of scripts/prepare.sh, started (its answer: `_prepared`)."""
        return self.channel(
            ["sh", "-c", PREPARE, "caseflow", target, staging, str(self._sweep_minutes())]
        )

    def _prepared(self, chan: Any, staging: str) -> upload_resume.Prepared:
        rc, out, err = self._answer(chan)
        if rc not in (0, 3):
            text = err.decode("utf-8", "replace")
            raise space_or_permission(text, f"preparing {staging}") or TransientError(
                f"preparing {staging} failed (exit {rc}): {text.strip()[:300]}"
            )
        return upload_resume.parse_prepared(out)

    def _check_staged(
        self, local_dir: Path, staging: str, check: upload_resume.Check
    ) -> tuple[set[str], dict[str, list[bool]]]:
        """Remove what does not belong in the staging folder; checksum what may stay, on both
        sides at once."""
        local = _Background(lambda: upload_resume.local_sums(local_dir, check))
        try:
            rc, out, err = self._call(
                ["sh", "-c", RESUME, "caseflow", staging, *check.args()], check.stdin()
            )
        finally:
            local.wait()
        try:
            mine = local.result()
        except OSError as exc:  # the case folder's problem, not the connection's (guard)
            raise local_problem(exc, local_dir, self.name) from exc
        if rc != 0:
            raise TransientError(
                f"checking {staging} on {self.name} failed (exit {rc}): "
                f"{err.decode('utf-8', 'replace').strip()[:300]}"
            )
        return upload_resume.kept(check, mine, upload_resume.parse_check(out, check))

    def _commit(
        self,
        staging: str,
        target: str,
        expected: set[tuple[str, str, int]],
        sums: dict[str, str] | None,
        times: list[str],
    ) -> None:
        lines = (
            b"".join(sum_line(p, d) for p, d in sorted(sums.items())) if sums is not None else None
        )
        rc, out, err = self.channels.guard(
            lambda: self._call(
                [
                    "sh",
                    "-c",
                    COMMIT,
                    "caseflow",
                    staging,
                    target,
                    listing_digest(expected),
                    "sums" if sums is not None else "-",
                    *times,
                ],
                lines,
            ),
            "renaming",
        )
        text = err.decode("utf-8", "replace")
        if rc == 4:
            got = parse_listing(out.decode("utf-8", "surrogateescape"))
            raise TransientError(
                f"upload to {self.name} did not verify "
                f"({difference(expected, got)}); will upload again"
            )
        if rc == 8:
            raise TransientError(
                f"upload to {self.name}: checksum mismatch "
                f"({text.strip()[:200]}); will upload again"
            )
        if rc != 0 or b"committed" not in out:
            raise space_or_permission(text, f"renaming {staging}") or TransientError(
                f"renaming {staging} failed (exit {rc}): {text.strip()[:300]}"
            )


class ChannelBudget:
    """Channels that may be open at once. An upload takes what it wants or what is free (at
    least one, waiting for it), never more later while it holds some: two uploads that each
    waited for the rest of their share would wait for each other.

    Every unit taken is given back once, on every way out (upload_streams.Opening: a channel
    that fails to open at once, one that opened when it is closed, in a `finally`); a wait
    for one is bounded (`take`'s timeout). Units that were never given back (streams of a
    master killed mid-upload whose end raised before their channels were closed) once left
    the next upload of the host waiting here for good, its case stuck with no error."""

    def __init__(self, size: int, host: str = "the host"):
        self.size = size
        self.free = size
        self.host = host
        self.cond = threading.Condition()

    def take(self, wanted: int, wait: bool = True, timeout: float | None = None) -> int:
        """Up to `wanted` channels; at least one unless `wait` is False, waiting for it at
        most `timeout` seconds (None: without bound), then a TransientError."""
        with self.cond:
            if wait and not self.cond.wait_for(lambda: self.free >= 1, timeout):
                raise TransientError(
                    f"no upload channel to {self.host} came free within {timeout or 0:.0f} s: "
                    f"all {self.size} (transport.max_channels) in use by other uploads; "
                    "will try again"
                )
            got = max(0, min(wanted, self.free))
            self.free -= got
            return got

    def release(self, n: int = 1) -> None:
        """Give back `n` units taken earlier."""
        with self.cond:
            if n < 0 or self.free + n > self.size:
                raise ValueError(
                    f"channel budget of {self.host}: {n} given back with {self.free} of "
                    f"{self.size} free (more than were taken)"
                )
            self.free += n
            self.cond.notify_all()


class _Background(Generic[R]):
    """`fn()` in a thread of its own, its result (or exception) when asked."""

    def __init__(self, fn: Callable[[], R]):
        self._result: R | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], R]) -> None:
        try:
            self._result = fn()
        except BaseException as exc:  # handed to the caller
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> R:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]  # set when there is no error
