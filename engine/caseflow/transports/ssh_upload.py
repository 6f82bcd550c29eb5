"""The `ssh` transport's upload: staged, verified, renamed into place.

A case goes into a staging folder next to its target: one tar stream (tarstream.TarStream)
over one channel into the remote `tar -x`, and files of `large_file_bytes` or more as byte
ranges over parallel channels into `dd`; the staging folder is verified (file count and sizes,
SHA-256 with `verify: checksum`) and only then renamed into place (scripts/unpack.sh and
scripts/commit.sh).

`StagedUpload` is a mixin of the transport. What it uses of it: `cfg` (`verify`,
`large_file_bytes`), `name`, `run`/`_sh` (a command), `_guard` (errors of the connection
turned into caseflow's), `_channel(command)` (a channel with a command started on it:
`sendall`, `shutdown_write`, `closed`, `eof_received`, `recv_exit_status`, `close`), `_drain`
(all of a channel's output) and the `commands` counter.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..casefolder import Manifest
from ..errors import PermanentError, TransientError
from . import check_room
from .shell import script
from .ssh_connection import classify
from .tarstream import CHUNK, Counter, NotAFile, Progress, SendFailed, TarStream

log = logging.getLogger("caseflow.ssh")

# Large files go as this many byte ranges at once, each over its own channel into its own
# remote dd: one 1 GiB file took 1.46-1.56 s with two, 1.58-2.04 s with one, and 1.85-2.0 s
# with scp -c aes128-gcm (loopback, 2 cores: the remote writers and sshd overlap better)
RANGES = 2

LIST = script(__package__, "list.sh", "listing.sh")
PREPARE = script(__package__, "prepare.sh", "listing.sh")
UNPACK = script(__package__, "unpack.sh", "listing.sh", "mark.sh")
RANGE = script(__package__, "range.sh")
COMMIT = script(__package__, "commit.sh", "mark.sh")
SUMS = script(__package__, "sums.sh")


def _space_or_permission(text: str, action: str) -> Exception | None:
    low = text.lower()
    # GNU tar reports a write cut short by a full disk as "Wrote only N of M bytes"
    if "no space left" in low or "disk quota" in low or "wrote only" in low:
        return PermanentError(f"{action}: no space left on the remote side ({text.strip()[:200]})")
    if "permission denied" in low or "read-only file system" in low:
        return PermanentError(f"{action}: {text.strip()[:300]}")
    return None


class StagedUpload:
    """The upload steps of a transport that runs commands on channels (see above)."""

    # -- listing and checksums -------------------------------------------------------------
    def listing(self, path: str) -> set[tuple[str, str, int]] | None:
        """What is in a remote folder, as manifest entries; None when it does not exist."""
        res = self._sh(LIST, path, what="listing")
        if res.returncode == 3:
            return None
        if res.returncode != 0:
            raise _space_or_permission(res.stderr, f"listing {path}") or \
                TransientError(f"listing {path} failed: {res.stderr.strip()[:300]}")
        return _parse_listing(res.stdout)

    def checksums(self, path: str) -> dict[str, str]:
        res = self._sh(SUMS, path, what="checksums")
        if res.returncode != 0:
            raise TransientError(f"sha256sum in {path} failed: {res.stderr.strip()[:300]}")
        return _parse_sums(res.stdout)

    # -- upload ------------------------------------------------------------------------------
    def upload_dir(self, local_dir: Path, remote_path: str, manifest: Manifest,
                   progress: Progress | None = None) -> bool:
        """Two round trips in the common case: prepare (list the target, recreate the
        staging folder), then one tar stream that the remote side unpacks, verifies
        against the listing's digest and renames into place. Files of large_file_bytes
        or more follow as byte ranges over parallel channels; then the listing is checked
        (and checksums with verify: checksum) and a last command marks and renames."""
        local_dir = Path(local_dir)
        expected = manifest.as_set()
        checksum = self.cfg.verify == "checksum"
        parent, base = posixpath.split(remote_path)
        staging = posixpath.join(parent, f".staging-{base}")
        res = self._sh(PREPARE, remote_path, staging, what="staging")
        if res.returncode not in (0, 3):
            raise _space_or_permission(res.stderr, f"preparing {staging}") or \
                TransientError(f"preparing {staging} failed: {res.stderr.strip()[:300]}")
        free_kib, _, listing = res.stdout.partition("\0")
        if free_kib.strip().isdigit():
            try:
                check_room(manifest, int(free_kib) * 1024, f"{self.name}:{parent}")
            except PermanentError:
                self._discard(staging)
                raise
        if res.returncode == 0 and _parse_listing(listing) == expected and (
                not checksum or self.checksums(remote_path) == _local_sums(local_dir, manifest)):
            self.run(["rm", "-rf", "--", staging])
            return False
        large = [e for e in manifest.entries
                 if e.kind == "f" and e.size >= self.cfg.large_file_bytes]
        one_pass = not large and not checksum  # else: verify and rename in later commands
        counter = Counter(progress, manifest.size_bytes)
        sums: dict[str, str] = {}
        self._guard(lambda: self._tar_upload(
            local_dir, staging, remote_path, manifest, counter,
            sums if checksum else None, listing_digest(expected) if one_pass else "-",
            {e.path for e in large}), "uploading")
        if one_pass:
            return True
        times = []
        if large:
            try:
                times = self._send_ranges(local_dir, staging, large, counter)
            except PermanentError:
                self._discard(staging)  # e.g. a full disk: do not leave the half copy there
                raise
            if checksum:
                sums.update(_local_sums(local_dir, Manifest(tuple(large))))
        got = self.listing(staging)
        if got != expected:
            raise TransientError(f"upload to {self.name} did not verify "
                                 f"({_difference(expected, got)}); will upload again")
        if checksum:
            remote = self.checksums(staging)
            wrong = sorted(p for p, d in sums.items() if remote.get(p) != d)
            if wrong:
                raise TransientError(f"upload to {self.name}: checksum mismatch for {wrong[:3]}")
        res = self._sh(COMMIT, staging, remote_path, *times, what="rename")
        if res.returncode != 0:
            raise TransientError(f"renaming {staging} failed: {res.stderr.strip()[:300]}")
        return True

    def _discard(self, path: str) -> None:
        try:
            self.run(["rm", "-rf", "--", path])
        except (TransientError, PermanentError) as exc:
            log.warning("could not remove %s on %s: %s", path, self.name, exc)

    def _send_ranges(self, local_dir: Path, staging: str, large: list, counter: Counter
                     ) -> list[str]:
        """The large files, in RANGES byte ranges each, over as many channels at once.
        Returns (path, mode, mtime) of each, for COMMIT."""
        jobs, times = [], []
        for entry in large:
            full = os.path.join(os.fspath(local_dir), entry.path)
            try:
                st = os.stat(full)
            except OSError as exc:
                raise PermanentError(f"cannot read {full}: {exc.strerror}") from exc
            if st.st_size != entry.size:
                raise TransientError(f"{full} changed since the case was checked; will upload "
                                     "again")
            times += [entry.path, f"{stat.S_IMODE(st.st_mode):o}", str(int(st.st_mtime))]
            part = -(-entry.size // RANGES // CHUNK) * CHUNK  # whole MiB but the last
            for offset in range(0, entry.size, part):
                jobs.append((full, posixpath.join(staging, entry.path), offset,
                             min(part, entry.size - offset)))
        failed = threading.Event()  # one range failed: the others stop at their next MiB
        with ThreadPoolExecutor(RANGES, thread_name_prefix="caseflow-range") as pool:
            futures = [pool.submit(self._guard, lambda j=j: self._send_range(*j, counter, failed),
                                   "uploading a large file") for j in jobs]
            errors = []
            for f in futures:
                try:
                    f.result()
                except Exception as exc:
                    failed.set()
                    errors.append(exc)
        if errors:  # a permanent reason (a full disk, a file gone) before a transient one
            raise next((e for e in errors if isinstance(e, PermanentError)), errors[0])
        return times

    def _send_range(self, full: str, remote: str, offset: int, length: int, counter: Counter,
                    failed: threading.Event) -> None:
        chan = self._channel(["sh", "-c", RANGE, "caseflow", remote, str(offset), str(length)])
        try:
            view = memoryview(bytearray(CHUNK))  # sent as slices: see TarStream
            try:
                with open(full, "rb", buffering=0) as f:
                    f.seek(offset)
                    left = length
                    while left and not failed.is_set():
                        n = f.readinto(view[:min(left, CHUNK)])
                        if not n:
                            raise TransientError(f"{full} shrank while it was sent; will "
                                                 "upload again")
                        chan.sendall(view[:n])
                        counter.add(n)
                        left -= n
            except (PermissionError, FileNotFoundError) as exc:
                raise PermanentError(f"cannot read {full}: {exc.strerror}") from exc
            if left:
                return  # another range failed; this one stops, unsent (its dd fails)
            chan.shutdown_write()  # dd reads until this EOF: no race (see _exec)
            _, err = self._drain(chan)
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        self.commands += 1
        if rc != 0:
            text = err.decode("utf-8", "replace")
            raise _space_or_permission(text, f"upload to {self.name}") or \
                TransientError(f"writing {remote} on {self.name} failed (exit {rc}): "
                               f"{text.strip()[:300]}")

    def _tar_upload(self, local_dir: Path, staging: str, target: str, manifest: Manifest,
                    counter: Counter, sums: dict | None, digest: str,
                    skip: set[str] = frozenset()) -> None:
        chan = self._channel(["sh", "-c", UNPACK, "caseflow", staging, target, digest])
        stream_error: BaseException | None = None
        local_error: Exception | None = None
        tar = TarStream(chan, counter)
        try:
            base = os.fspath(local_dir)
            for entry in manifest.entries:
                if entry.path not in skip:  # large files go in ranges
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
                                             f"upload to {self.name} failed: {exc}")
        if local_error is not None:  # the remote side cleans up before the case fails
            with contextlib.suppress(SendFailed, OSError, EOFError):
                tar.abort()
                chan.shutdown_write()
                self._drain(chan)
            chan.close()
            raise local_error
        try:
            # The remote tar reads until this EOF, so it cannot race with the channel's close
            # (see _exec); after a failed send, only while the remote side has not ended.
            if stream_error is None or not (chan.closed or chan.eof_received):
                chan.shutdown_write()
            out, err = self._drain(chan)
            rc = chan.recv_exit_status()
        except (OSError, EOFError, socket.timeout) as exc:
            raise classify(stream_error or exc, f"uploading to {self.name}") from exc
        finally:
            chan.close()
        self.commands += 1
        text = err.decode("utf-8", "replace")
        if rc != 0 or stream_error is not None:
            problem = _space_or_permission(text, f"upload to {self.name}")
            if problem:
                raise problem
            if stream_error is not None:
                raise classify(stream_error, f"uploading to {self.name}")
            if rc == 4:
                got = _parse_listing(out.decode("utf-8", "surrogateescape"))
                raise TransientError(f"upload to {self.name} did not verify "
                                     f"({_difference(manifest.as_set(), got)}); "
                                     "will upload again")
            raise TransientError(f"unpacking on {self.name} failed (exit {rc}): "
                                 f"{text.strip()[:300]}")


def _parse_sums(text: str) -> dict[str, str]:
    sums = {}
    for line in text.splitlines():
        escaped = line.startswith("\\")
        if escaped:
            line = line[1:]
        digest, _, name = line.partition("  ")
        if escaped:
            name = name.replace("\\n", "\n").replace("\\r", "\r").replace("\\\\", "\\")
        sums[name[2:] if name.startswith("./") else name] = digest
    return sums


def _parse_listing(text: str) -> set[tuple[str, str, int]]:
    out = set()
    for item in text.split("\0"):
        if item:
            kind, size, rel = item.split(" ", 2)
            out.add((rel, kind, int(size)))
    return out


def listing_digest(entries) -> str:
    """SHA-256 of a listing as the remote side computes it (`LC_ALL=C sort -z | sha256sum`)."""
    lines = sorted(os.fsencode(f"{kind} {size if kind == 'f' else 0} ") + os.fsencode(path)
                   + b"\0" for path, kind, size in entries)
    return hashlib.sha256(b"".join(lines)).hexdigest()


def _difference(expected, got) -> str:
    got = got or set()
    missing = sorted(expected - got)[:3]
    extra = sorted(got - expected)[:3]
    return "; ".join(filter(None, [f"missing or different: {missing}" if missing else "",
                                   f"unexpected: {extra}" if extra else ""])) or "differs"


def _local_sums(local_dir: Path, manifest: Manifest) -> dict[str, str]:
    out = {}
    for e in manifest.entries:
        if e.kind == "f":
            h = hashlib.sha256()
            with open(local_dir / e.path, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    h.update(chunk)
            out[e.path] = h.hexdigest()
    return out
