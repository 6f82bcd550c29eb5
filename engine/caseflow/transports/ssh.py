"""The `ssh` transport: a remote host reached with paramiko over one long-lived connection.

Uploads go into a staging folder next to the target, as one tar stream (written
here) over one channel into the remote `tar -x`, and files of `large_file_bytes`
or more as byte ranges over parallel channels into `dd`; the staging folder is
verified (file count and sizes, SHA-256 with `verify: checksum`) and only then
renamed into place. Every remote command is
built from an argument list and quoted with shlex; short outages are retried
with tenacity, longer ones are left to the engine's persisted backoff.

The remote host needs a POSIX shell, GNU find, tar and coreutils (sha256sum).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import shlex
import shutil
import socket
import stat
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from tenacity import (Retrying, retry_if_exception, stop_after_attempt, stop_after_delay,
                      wait_exponential, wait_random)

from .. import metrics
from ..casefolder import Manifest
from ..errors import PermanentError, TransientError
from . import RunResult, Transport, check_room, remove_local
from .ssh_connection import Connection, Unreachable, classify

log = logging.getLogger("caseflow.ssh")

CHUNK = 1024 * 1024         # the upload's send buffer; also the remote tar's record size
# Large files go as this many byte ranges at once, each over its own channel into its own
# remote dd: one 1 GiB file took 1.46-1.56 s with two, 1.58-2.04 s with one, and 1.85-2.0 s
# with scp -c aes128-gcm (loopback, 2 cores: the remote writers and sshd overlap better)
RANGES = 2
Progress = Callable[[int, int], None]

# one NUL-terminated "<type> <size> <relative path>" per entry of folder $1 (size 0 unless a
# file), leaving out caseflow's bookkeeping folder at its top
_FIND = (r'(cd -- "$1" && find . -mindepth 1 -path ./.caseflow -prune -o \( -type f -printf '
         r'"f %s %P\0" \) -o \( -type d -printf "d 0 %P\0" \) -o \( -type l -printf '
         r'"l 0 %P\0" \) -o -printf "? 0 %P\0")')
# $1 = a verified staging folder: mark when the upload was complete (results are what changed
# after this mark), then wait until the file system's clock has moved past the mark's time
# (a probe file newer than the mark), so that nothing the job writes can share it: at most a
# clock tick (4 ms here with coarse timestamps, 10 ms at most; ~1 ms with fine-grained ones)
# instead of a fixed 20 ms sleep
_MARK = (r'm="$1/.caseflow/uploaded"; t="$1/.caseflow/.tick"; mkdir -p -- "$1/.caseflow" && '
         r': > "$m" && i=0 && while : > "$t" && [ -z "$(find "$t" -newer "$m")" ] && '
         r'[ "$i" -lt 200 ]; do i=$((i + 1)); done && rm -f -- "$t"')
LIST = r'[ -d "$1" ] || exit 3; ' + _FIND
# $1 = target, $2 = staging: recreate the staging folder, print the KiB free there (then a
# NUL), then list the target (exit 3: none)
PREPARE = (r'rm -rf -- "$2" && mkdir -p -- "$2" || exit 2; '
           r'df -Pk -- "$2" 2>/dev/null | awk "NR==2 {printf \"%s\", \$4}"; printf "\0"; '
           r'[ -d "$1" ] || exit 3; ' + _FIND)
# stdin = tar stream; $1 = staging, $2 = target, $3 = digest of the expected listing, or "-"
# to only unpack. Unpacks, verifies the listing against the digest, renames into place.
# The remote tar reads and writes 1 MiB records (-b 2048): with its default 10 KiB records
# a 1 GiB file costs 100,000 writes on the remote side (1 GiB took 3.9 s instead of 3.0 s).
UNPACK = (r'list() { ' + _FIND + r'; }; tar --no-same-owner -b 2048 -x -f - -C "$1" || '
          r'{ rm -rf -- "$1"; exit 10; }; '
          r'[ "$3" = - ] && exit 0; '
          r'got=$(list "$1" | LC_ALL=C sort -z | sha256sum | cut -d" " -f1); '
          r'if [ "$got" != "$3" ]; then list "$1"; exit 4; fi; ' + _MARK + r' && '
          r'{ [ ! -e "$2" ] || rm -rf -- "$2"; } && mv -- "$1" "$2" || exit 5; echo committed')
# stdin = bytes $2.. of a file, $3 of them; $1 = the file in the staging folder. Writes them
# there (the file is made if need be) and fails (exit 7) unless all $3 of them arrived.
RANGE = (r'out=$(LC_ALL=C dd of="$1" bs=1M oflag=seek_bytes seek="$2" conv=notrunc '
         r'iflag=fullblock 2>&1 >/dev/null); rc=$?; '
         r'n=$(printf "%s\n" "$out" | sed -n "s/^\([0-9][0-9]*\) bytes.*/\1/p" | tail -n 1); '
         r'[ "$rc" = 0 ] && [ "$n" = "$3" ] && exit 0; printf "%s\n" "$out" >&2; exit 7')
# $1 = a verified staging folder, $2 = target, then (path, mode, mtime) of each file sent in
# ranges: sets their modes and times, marks the upload complete, renames into place.
COMMIT = (r's=$1; d=$2; shift 2; while [ "$#" -ge 3 ]; do chmod "$2" "$s/$1" && '
          r'touch -m -d "@$3" "$s/$1" || exit 6; shift 3; done; set -- "$s" "$d"; ' + _MARK +
          r' && { [ ! -e "$2" ] || rm -rf -- "$2"; } && mv -- "$1" "$2"')
# $1 = parent folder, $2 = the case folder's name in it, $3 = "changed" (only what changed
# after the upload's mark, when there is one) or "all"; then find's tests. Packs the regular
# files found, their paths starting with ./$2/ (exit 20: no such folder).
FETCH = (r'cd -- "$1" 2>/dev/null || exit 20; d=./$2; mode=$3; shift 3; [ -d "$d" ] || exit 20; '
         r'm=$d/.caseflow/uploaded; if [ "$mode" = changed ] && [ -e "$m" ]; then '
         r'set -- "$@" -cnewer "$m"; fi; '
         r'find "$d" "$@" -print0 | tar --null --no-recursion -c -f - -T -')
# $1 = folder: "<sha256>  ./<path>" per file (sha256sum escapes odd names with a leading \)
SUMS = r'cd "$1" && find . -path ./.caseflow -prune -o -type f -print0 | xargs -0 -r sha256sum --'


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientError) and not isinstance(exc, Unreachable)


def _space_or_permission(text: str, action: str) -> Exception | None:
    low = text.lower()
    # GNU tar reports a write cut short by a full disk as "Wrote only N of M bytes"
    if "no space left" in low or "disk quota" in low or "wrote only" in low:
        return PermanentError(f"{action}: no space left on the remote side ({text.strip()[:200]})")
    if "permission denied" in low or "read-only file system" in low:
        return PermanentError(f"{action}: {text.strip()[:300]}")
    return None


class _Counter:
    """Counts file bytes sent and reports them as progress (bytes sent, bytes in all)."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress = progress
        self.total = total
        self.sent = 0
        self.lock = threading.Lock()  # ranges are sent from several threads

    def add(self, n: int) -> None:
        with self.lock:
            self.sent += n
            if self.progress:
                self.progress(self.sent, self.total)


class _TarStream:
    """A GNU tar stream of local files, written straight into a channel.

    Headers are made here (tarfile's cost 30 us a file); file data is read into one
    buffer and sent from it as memoryview slices: paramiko cuts what it is given into
    32 KiB packets, and a bytes object is copied whole at every cut (1 GiB cost 5.2 s
    instead of 2.2 s). No per-file round trips: the remote tar reads the stream as it
    comes. Progress is the file bytes sent, reported as each buffer goes out.
    """

    def __init__(self, chan, counter: _Counter, size: int = CHUNK):
        self.chan = chan
        self.counter = counter
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.pos = 0
        self.unreported = 0  # file bytes in the buffer, not sent yet

    def _send(self) -> None:
        if self.pos:
            try:
                self.chan.sendall(self.view[:self.pos])
            except (OSError, EOFError) as exc:  # the channel, not a local file
                raise _SendFailed() from exc
            self.pos = 0
        if self.unreported:
            self.counter.add(self.unreported)
            self.unreported = 0

    def _put(self, data: bytes) -> None:
        if self.pos + len(data) > len(self.buf):
            self._send()
        self.view[self.pos:self.pos + len(data)] = data
        self.pos += len(data)

    def add(self, local_dir: str, entry, sums: dict | None) -> None:
        """One manifest entry. A file that is no longer a regular file, or that shrinks
        while it is read, raises (before the end-of-archive: the remote tar fails)."""
        full = f"{local_dir}/{entry.path}"
        name = os.fsencode(entry.path)
        if entry.kind == "d":
            st = os.lstat(full)
            self._put(_tar_header(name + b"/", st.st_mode, 0, st.st_mtime, b"5"))
            return
        if entry.kind == "l":
            st = os.lstat(full)
            self._put(_tar_header(name, st.st_mode, 0, st.st_mtime, b"2",
                                  os.fsencode(os.readlink(full))))
            return
        # O_NONBLOCK: a file replaced by a fifo since the scan must not block the upload
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _NotAFile(entry.path)
            self._put(_tar_header(name, st.st_mode, st.st_size, st.st_mtime, b"0"))
            digest = hashlib.sha256() if sums is not None else None
            left, size = st.st_size, len(self.buf)
            while left:
                if self.pos == size:
                    self._send()
                n = os.readv(fd, [self.view[self.pos:self.pos + min(left, size - self.pos)]])
                if n == 0:
                    raise OSError(f"{full}: unexpected end of data (it shrank while it was sent)")
                if digest is not None:
                    digest.update(self.view[self.pos:self.pos + n])
                self.pos += n
                self.unreported += n
                left -= n
            self._put(_ZEROS[:-st.st_size % 512])
            if digest is not None:
                sums[entry.path] = digest.hexdigest()
        finally:
            os.close(fd)

    def close(self) -> None:
        """The end-of-archive blocks; everything is sent."""
        self._put(_ZEROS + _ZEROS)
        self._send()

    def abort(self) -> None:
        """End the stream with a block that is no tar header (nor valid data to its end):
        the remote tar fails, and the remote side removes the staging folder."""
        self._put(b"caseflow: upload aborted\n".ljust(512, b"\xff"))
        self._send()


class _NotAFile(Exception):
    def __init__(self, path: str):
        super().__init__(f"cannot send {path!r}: it is no longer a regular file")


class _SendFailed(Exception):
    """Sending into the channel failed (its cause says why); local files raise OSError."""


_ZEROS = bytes(512)
# A ustar header block with GNU's magic. Built from its variable fields (name, mode, size,
# mtime, type, link name) around constant ones: uid and gid 0, no owner or group names, no
# device numbers or prefix. The checksum is the byte sum with its own field as spaces.
_IDS = b"0000000\0" * 2                              # uid, gid
_TAIL = b"ustar  \0".ljust(255, b"\0")               # magic+version ... the end of the block
_FIXED_SUM = sum(_IDS) + sum(_TAIL) + 8 * ord(" ")


def _tar_number(value: int, width: int) -> bytes:
    """A header number as tar (and tarfile) writes it: octal digits and a NUL, or GNU's
    base-256 when it does not fit (files of 8 GiB and more, odd mtimes)."""
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    if value >= 0:
        return b"\x80" + value.to_bytes(width - 1, "big")
    return (256 ** width + value).to_bytes(width, "big")


def _tar_header(name: bytes, mode: int, size: int, mtime: float, kind: bytes,
                link: bytes = b"") -> bytes:
    """The header block(s) of one member in GNU format, byte for byte as tarfile.GNU_FORMAT
    writes them: names and link targets longer than 100 bytes go first in ././@LongLink
    members (and are cut to 100 bytes in the header)."""
    out = b""
    if len(name) > 100:
        out += _long_name(name, b"L")
        name = name[:100]
    if len(link) > 100:
        out += _long_name(link, b"K")
        link = link[:100]
    fields = (_tar_number(stat.S_IMODE(mode), 8), _tar_number(size, 12),
              _tar_number(int(mtime), 12))
    check = _FIXED_SUM + sum(name) + sum(link) + sum(fields[0]) + sum(fields[1]) + \
        sum(fields[2]) + kind[0]
    return b"".join((out, name.ljust(100, b"\0"), fields[0], _IDS, fields[1], fields[2],
                     b"%06o\0 " % check, kind, link.ljust(100, b"\0"), _TAIL))


def _long_name(value: bytes, kind: bytes) -> bytes:
    data = value + b"\0"
    return _tar_header(b"././@LongLink", 0, len(data), 0, kind) + data + \
        _ZEROS[:-len(data) % 512]


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


class SSHTransport(Transport):
    def __init__(self, cfg, sleep=time.sleep):
        super().__init__(cfg.name, cfg.root)
        self.cfg = cfg
        self.conn = Connection(cfg)
        self.sleep = sleep
        self.commands = 0          # remote commands run (for tests and benchmarks)
        self._root_resolved = not cfg.root.startswith("~")

    # -- plumbing ----------------------------------------------------------------------
    def _retrying(self, fn, what: str):
        retrying = Retrying(stop=stop_after_attempt(4) | stop_after_delay(15),
                            wait=wait_exponential(multiplier=0.5, max=4) + wait_random(0, 0.5),
                            retry=retry_if_exception(_retryable), reraise=True, sleep=self.sleep,
                            before_sleep=lambda rs: log.info(
                                "%s on %s failed (%s); trying again", what, self.name,
                                rs.outcome.exception()))
        return retrying(fn)

    def _guard(self, fn, what: str):
        """Run fn; turn connection errors into caseflow errors and drop the broken connection."""
        try:
            return fn()
        except (PermanentError, TransientError):
            raise
        except Exception as exc:
            err = classify(exc, f"{what} on {self.name}")
            if err is exc:
                raise
            metrics.ssh_error(self.name)
            if isinstance(err, TransientError):
                self.conn.reset()
            raise err from exc

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
        command = shlex.join(argv)
        return self._retrying(lambda: self._guard(lambda: self._exec(command, timeout),
                                                  f"running {argv[0]}"), f"running {argv[0]}")

    def _exec(self, command: str, timeout: float | None) -> RunResult:
        client = self.conn.client()
        chan = client.get_transport().open_session(timeout=self.cfg.connect_timeout)
        try:
            chan.settimeout(timeout or self.cfg.command_timeout)
            # The command's stdin is /dev/null on the remote side instead of an EOF sent
            # from here: paramiko can send that EOF after the channel's close when the
            # command ends at once, and OpenSSH then drops the whole connection ("ieof
            # packet referred to nonexistent channel", paramiko issue #1705): four threads
            # running short commands lost the connection every second or two.
            chan.exec_command("exec </dev/null; " + command)
            out, err = self._drain(chan, timeout)
            rc = chan.recv_exit_status()
        except socket.timeout as exc:
            metrics.ssh_error(self.name)
            raise TransientError(f"a command on {self.name} did not finish within "
                                 f"{timeout or self.cfg.command_timeout:.0f} s") from exc
        finally:
            chan.close()
        self.commands += 1
        metrics.ssh_command(self.name)
        return RunResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def _drain(self, chan, timeout: float | None = None) -> tuple[bytes, bytes]:
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
                except socket.timeout:
                    if time.monotonic() > deadline:
                        raise
                    continue
                if not data:
                    break
                stream += data
        return bytes(out), bytes(err)

    def _sh(self, script: str, *args: str, what: str) -> RunResult:
        return self.run(["sh", "-c", script, "caseflow", *args])

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
        counter = _Counter(progress, manifest.size_bytes)
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

    def _send_ranges(self, local_dir: Path, staging: str, large: list, counter: _Counter
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

    def _send_range(self, full: str, remote: str, offset: int, length: int, counter: _Counter,
                    failed: threading.Event) -> None:
        chan = self.conn.client().get_transport().open_session(timeout=self.cfg.connect_timeout)
        try:
            chan.settimeout(self.cfg.command_timeout)
            chan.exec_command(shlex.join(["sh", "-c", RANGE, "caseflow", remote, str(offset),
                                          str(length)]))
            view = memoryview(bytearray(CHUNK))  # sent as slices: see _TarStream
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
                    counter: _Counter, sums: dict | None, digest: str,
                    skip: set[str] = frozenset()) -> None:
        client = self.conn.client()
        chan = client.get_transport().open_session(timeout=self.cfg.connect_timeout)
        chan.settimeout(self.cfg.command_timeout)
        chan.exec_command(shlex.join(["sh", "-c", UNPACK, "caseflow", staging, target, digest]))
        stream_error: BaseException | None = None
        local_error: Exception | None = None
        tar = _TarStream(chan, counter)
        try:
            base = os.fspath(local_dir)
            for entry in manifest.entries:
                if entry.path not in skip:  # large files go in ranges
                    tar.add(base, entry, sums)
            tar.close()
        except _SendFailed as exc:
            stream_error = exc.__cause__
        except _NotAFile as exc:
            local_error = PermanentError(str(exc))
        except OSError as exc:  # reading a local file
            if isinstance(exc, PermissionError) or (isinstance(exc, FileNotFoundError) and
                                                    exc.filename):
                local_error = PermanentError(f"cannot read {exc.filename}: {exc.strerror}")
            else:  # e.g. a file that shrank while it was read: try again later
                local_error = TransientError(f"reading the case folder {local_dir} for the "
                                             f"upload to {self.name} failed: {exc}")
        if local_error is not None:  # the remote side cleans up before the case fails
            with contextlib.suppress(_SendFailed, OSError, EOFError):
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

    # -- download ----------------------------------------------------------------------------
    def download(self, remote_path: str, local_path: Path,
                 patterns: Sequence[str] | None = None) -> None:
        local_path = Path(local_path)
        staging = local_path.parent / f".staging-{local_path.name}"
        parent, base = posixpath.split(remote_path.rstrip("/"))
        if patterns is None:
            argv = ["tar", "-c", "-f", "-", "-C", parent, "--", base]
        else:  # find matches (no shell sees the patterns), tar packs the list it gets
            expr = ["("]
            for i, pattern in enumerate(patterns):
                expr += (["-o"] if i else []) + ["-path", f"./{base}/{pattern}"]
            expr += [")", "(", "-type", "f", "-o", "-type", "l", ")"]
            argv = ["sh", "-c", 'cd -- "$1" || exit 2; shift; [ -d "$1" ] || exit 2; '
                    'find "$@" -print0 | tar --null --no-recursion -c -f - -T -',
                    "caseflow", parent, f"./{base}", *expr]
        try:
            self._guard(lambda: self._tar_download(argv, base, staging, remote_path),
                        "downloading")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if os.path.lexists(local_path):
            remove_local(local_path)
        fetched = staging / base
        if patterns is not None and not fetched.exists():
            fetched.mkdir()  # nothing matched: an empty folder
        os.rename(fetched, local_path)
        staging.rmdir()

    def fetch_results(self, remote_path: str, local_path: Path,
                      patterns: Sequence[str] | None = None) -> int:
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
        argv = ["sh", "-c", FETCH, "caseflow", parent, base,
                "all" if patterns else "changed", *tests]
        try:
            self._guard(lambda: self._tar_download(argv, base, staging, remote_path),
                        "fetching results")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fetched = staging / base
        if not fetched.exists():
            fetched.mkdir()  # nothing new: an empty folder
        count = sum(len(files) for _, _, files in os.walk(fetched))
        if os.path.lexists(local_path):
            remove_local(local_path)
        os.rename(fetched, local_path)
        staging.rmdir()
        return count

    def _tar_download(self, argv: list[str], base: str, staging: Path, remote_path: str) -> None:
        if os.path.lexists(staging):
            remove_local(staging)
        staging.mkdir(parents=True)
        client = self.conn.client()
        chan = client.get_transport().open_session(timeout=self.cfg.connect_timeout)
        chan.settimeout(self.cfg.command_timeout)
        chan.exec_command(shlex.join(argv))
        unreadable: tarfile.TarError | None = None
        try:
            reader = chan.makefile("rb")
            try:
                tar = tarfile.open(fileobj=reader, mode="r|")
            except tarfile.ReadError as exc:  # no stream at all: the exit code says why
                unreadable, tar = exc, None
            with tar or contextlib.nullcontext([]):
                for member in tar or []:
                    _check_member(member, base)
                    # checked above; attributes are not taken (no remote owners, no setuid)
                    tar.extract(member, staging, set_attrs=False,
                                **({"filter": "fully_trusted"} if hasattr(tarfile, "data_filter")
                                   else {}))
                    if member.isreg():
                        os.chmod(staging / member.name, member.mode & 0o755)
            err = chan.makefile_stderr("rb").read().decode("utf-8", "replace")
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        self.commands += 1
        if rc == 0 and unreadable is not None:
            raise TransientError(f"download from {self.name}: no tar stream ({unreadable})")
        if rc != 0:
            if "Permission denied" in err:
                raise PermanentError(f"reading {remote_path} on {self.name}: "
                                     f"{err.strip()[:300]}")
            if rc in (2, 20) or "No such file" in err or "Cannot stat" in err:
                raise PermanentError(f"{remote_path} does not exist on {self.name}")
            raise TransientError(f"remote tar on {self.name} exited {rc}: {err.strip()[:300]}")

    def remove_tree(self, remote_path: str) -> None:
        res = self.run(["rm", "-rf", "--", remote_path])
        if res.returncode != 0:
            raise _space_or_permission(res.stderr, f"removing {remote_path}") or \
                TransientError(f"removing {remote_path} failed: {res.stderr.strip()[:300]}")

    def close(self) -> None:
        self.conn.close()


def _glob_literal(text: str) -> str:
    """`text` as a find -path pattern that matches only itself."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


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


def _check_member(member: tarfile.TarInfo, base: str) -> None:
    """Refuse anything that would land outside the download folder."""
    name = member.name[2:] if member.name.startswith("./") else member.name
    member.name = name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or parts[0] != base:
        raise PermanentError(f"refusing to extract {name!r}: outside {base!r}")
    if member.issym() or member.islnk():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
        if member.linkname.startswith("/") or target.split("/")[0] != base:
            raise PermanentError(f"refusing link {name!r} -> {member.linkname!r}: outside")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise PermanentError(f"refusing {name!r}: not a file, folder or link")


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
