"""Tar streams: the upload's writer, and the reader of the results a host sends back.

The writer makes a GNU tar stream of local files as buffers to send (upload_pump.py sends them);
the remote `tar -x` unpacks it as it comes. The reader unpacks the stream of a
download or of a job's results into a local staging folder, checking every member first.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import PermanentError

CHUNK = 1024 * 1024  # the upload's send buffer; also the remote tar's record size
Progress = Callable[[int, int], None]


class Counter:
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


class TarWriter:
    """A GNU tar stream of local files, as a sequence of buffers to send.

    Headers are made here (tarfile's cost 30 us a file); file data is read straight into one
    buffer, which `chunks()` yields as a memoryview (with the count of file bytes in it) each
    time it is full: the caller sends it whole (memoryview slices: paramiko cuts what it is
    given into 32 KiB packets, and a bytes object is copied whole at every cut; 1 GiB cost
    5.2 s instead of 2.2 s) before it asks for the next, which reuses the buffer. No per-file
    round trips: the remote tar reads the stream as it comes.
    """

    def __init__(self, size: int = CHUNK):
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.pos = 0
        self.unreported = 0  # file bytes in the buffer
        self.folders: set[str] = set()  # the folders this stream has made (see _parents)

    def chunks(self, local_dir: str, entries, sums: dict | None):
        """The stream of `entries` (then the end-of-archive). A file that is no longer a
        regular file, or that shrinks while it is read, raises (before the end-of-archive:
        the remote tar fails)."""
        for entry in entries:
            yield from self._add(local_dir, entry, sums)
        yield from self._put(_ZEROS + _ZEROS)
        yield from self._flush()

    def _flush(self):
        if self.pos:
            yield self.view[: self.pos], self.unreported
            self.pos = self.unreported = 0

    def _put(self, data: bytes):
        if self.pos + len(data) > len(self.buf):
            yield from self._flush()
        self.view[self.pos : self.pos + len(data)] = data
        self.pos += len(data)

    def _parents(self, local_dir: str, path: str):
        """The folders above `path` that this stream has not made yet, made first.

        Several streams unpack into one staging folder and take the files as they come, so
        a file's folder may be another stream's: the remote tar then makes it itself, and
        GNU tar (1.34) fails the file ("Cannot open: No such file or directory") when
        another tar makes that folder between its failed open and its own mkdir. A folder
        made by the member of its own stream is safe (an existing folder is kept)."""
        parent = path.rpartition("/")[0]
        if not parent or parent in self.folders:
            return
        yield from self._parents(local_dir, parent)
        st = os.lstat(f"{local_dir}/{parent}")
        yield from self._put(
            _tar_header(os.fsencode(parent) + b"/", st.st_mode, 0, st.st_mtime, b"5")
        )
        self.folders.add(parent)

    def _add(self, local_dir: str, entry, sums: dict | None):
        full = f"{local_dir}/{entry.path}"
        name = os.fsencode(entry.path)
        yield from self._parents(local_dir, entry.path)
        if entry.kind == "d":
            st = os.lstat(full)
            yield from self._put(_tar_header(name + b"/", st.st_mode, 0, st.st_mtime, b"5"))
            self.folders.add(entry.path)
            return
        if entry.kind == "l":
            st = os.lstat(full)
            yield from self._put(
                _tar_header(name, st.st_mode, 0, st.st_mtime, b"2", os.fsencode(os.readlink(full)))
            )
            return
        # O_NONBLOCK: a file replaced by a fifo since the scan must not block the upload
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotAFile(entry.path)
            yield from self._put(_tar_header(name, st.st_mode, st.st_size, st.st_mtime, b"0"))
            digest = hashlib.sha256() if sums is not None else None
            left, size = st.st_size, len(self.buf)
            while left:
                if self.pos == size:
                    yield from self._flush()
                n = os.readv(fd, [self.view[self.pos : self.pos + min(left, size - self.pos)]])
                if n == 0:
                    raise OSError(f"{full}: unexpected end of data (it shrank while it was sent)")
                if digest is not None:
                    digest.update(self.view[self.pos : self.pos + n])
                self.pos += n
                self.unreported += n
                left -= n
            yield from self._put(_ZEROS[: -st.st_size % 512])
            if sums is not None and digest is not None:
                sums[entry.path] = digest.hexdigest()
        finally:
            os.close(fd)


# A block that is no tar header (nor valid data to its end): sent after a local error, the
# remote tar fails on it, so nothing is renamed into place.
ABORT = b"caseflow: upload aborted\n".ljust(512, b"\xff")


class NotAFile(Exception):
    def __init__(self, path: str):
        super().__init__(f"cannot send {path!r}: it is no longer a regular file")


_ZEROS = bytes(512)
# A ustar header block with GNU's magic. Built from its variable fields (name, mode, size,
# mtime, type, link name) around constant ones: uid and gid 0, no owner or group names, no
# device numbers or prefix. The checksum is the byte sum with its own field as spaces.
_IDS = b"0000000\0" * 2  # uid, gid
_TAIL = b"ustar  \0".ljust(255, b"\0")  # magic+version ... the end of the block
_FIXED_SUM = sum(_IDS) + sum(_TAIL) + 8 * ord(" ")


def _tar_number(value: int, width: int) -> bytes:
    """A header number as tar (and tarfile) writes it: octal digits and a NUL, or GNU's
    base-256 when it does not fit (files of 8 GiB and more, odd mtimes)."""
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    if value >= 0:
        return b"\x80" + value.to_bytes(width - 1, "big")
    return (256**width + value).to_bytes(width, "big")


def _tar_header(
    name: bytes, mode: int, size: int, mtime: float, kind: bytes, link: bytes = b""
) -> bytes:
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
    fields = (
        _tar_number(stat.S_IMODE(mode), 8),
        _tar_number(size, 12),
        _tar_number(int(mtime), 12),
    )
    check = (
        _FIXED_SUM
        + sum(name)
        + sum(link)
        + sum(fields[0])
        + sum(fields[1])
        + sum(fields[2])
        + kind[0]
    )
    return b"".join(
        (
            out,
            name.ljust(100, b"\0"),
            fields[0],
            _IDS,
            fields[1],
            fields[2],
            b"%06o\0 " % check,
            kind,
            link.ljust(100, b"\0"),
            _TAIL,
        )
    )


def _long_name(value: bytes, kind: bytes) -> bytes:
    data = value + b"\0"
    return _tar_header(b"././@LongLink", 0, len(data), 0, kind) + data + _ZEROS[: -len(data) % 512]


# -- reading -------------------------------------------------------------------------------------
# What a host sends back is not trusted (issue 13, item 10): a compromised or buggy host must not
# be able to create or change anything outside the folder it is unpacked into. So this reader
# makes only folders and regular files (new ones, opened with O_NOFOLLOW), never hard links,
# devices or fifos, and no path with "..", an absolute path or a name outside `base`. Symbolic
# links (only with `links=True`, for `download`) are made last, after every file, so that no
# file is ever written through one; each must stay inside `base` without passing through
# another link. Python's own tarfile extraction is not used: before 3.12 its default trusts the
# archive, and even its "data" filter lets one member write through a link made by another.
# What an earlier member of the same stream can make a member's path fail with. Any other error
# of the local file system (a full disk, a read-only one, a folder that cannot be written) is not
# the stream's fault: it is raised as a LocalWriteError, which the transport never takes for a
# problem of the connection (an OSError of the channel, a timeout, is raised as it is).
_CLASHES = {errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.ELOOP, errno.ENOTEMPTY}
_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
}


class LocalWriteError(Exception):
    """Writing what arrived into the local folder failed (`error`, an OSError: no space left,
    a read-only file system, no permission, ...). The local side's problem: not the stream's,
    not the connection's (dropping the connection for it cut every other case's upload on it;
    see local_write_problem)."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def writing_locally() -> Iterator[None]:
    """An OSError of the local file system inside is a LocalWriteError."""
    try:
        yield
    except OSError as exc:
        raise LocalWriteError(exc) from exc


def extract(fileobj, base: str, staging: Path, *, links: bool = False) -> tarfile.ReadError | None:
    """Unpack the tar stream read from `fileobj` into the new, empty folder `staging`; every
    member must lie under `base` (a name without "/"). Raises PermanentError, naming the
    member, for anything else, and LocalWriteError when the local folder cannot be written.
    Returns the error when there was no tar stream at all (the command's exit code then says
    why), else None."""
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r|")
    except tarfile.ReadError as exc:  # no stream at all: the exit code says why
        return exc
    symlinks: dict[str, str] = {}
    with tar:
        for member in tar:
            parts = member_parts(member.name, base)
            name = "/".join(parts)
            try:
                if member.isdir():
                    with writing_locally():
                        os.makedirs(staging.joinpath(*parts), exist_ok=True)
                elif member.isreg():
                    _write(tar, member, staging, parts)
                elif member.issym() and links:
                    if len(parts) == 1 or name in symlinks:
                        raise PermanentError(
                            f"refusing link {name!r}: it would replace the folder or another link"
                        )
                    symlinks[name] = member.linkname
                else:
                    kind = _KINDS.get(member.type, f"of tar type {member.type!r}")
                    raise PermanentError(
                        f"refusing {name!r}: it is {kind}; only files and folders are taken"
                    )
            except LocalWriteError as exc:  # e.g. a file where the stream already made a folder
                if exc.error.errno not in _CLASHES:
                    raise
                raise PermanentError(
                    f"refusing {name!r}: it clashes with an earlier member ({exc.error.strerror})"
                ) from exc
    for name, target in symlinks.items():
        _check_link(name, target, symlinks)
        try:
            with writing_locally():
                os.makedirs(staging.joinpath(*name.split("/")[:-1]), exist_ok=True)
                os.symlink(target, staging / name)
        except LocalWriteError as exc:
            if exc.error.errno not in _CLASHES:
                raise
            raise PermanentError(
                f"refusing link {name!r}: it clashes with an earlier member ({exc.error.strerror})"
            ) from exc
    return None


def member_parts(name: str, base: str) -> list[str]:
    """The path components of a member's name, checked: relative, no ".", ".." or empty
    component, and under `base`."""
    while name.startswith("./"):
        name = name[2:]
    parts = name.rstrip("/").split("/")
    if name.startswith("/") or parts[0] != base or any(p in ("", ".", "..") for p in parts):
        raise PermanentError(f"refusing to extract {name!r}: outside {base!r}")
    return parts


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path, parts: list[str]) -> None:
    """A member's data as a new regular file (attributes are not taken: no remote owners, no
    setuid; the mode keeps its read and execute bits). What fails on the local side is a
    LocalWriteError; what fails reading the stream (the channel) is raised as it is."""
    path = staging.joinpath(*parts)
    with writing_locally():
        os.makedirs(staging.joinpath(*parts[:-1]), exist_ok=True)
        if os.path.lexists(path) and not os.path.isdir(path):
            os.unlink(path)  # a member sent twice: the last one counts, as with tar
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
    try:
        source = tar.extractfile(member)
        while source is not None:
            data = source.read(CHUNK)  # the stream: its errors are not the local side's
            if not data:
                break
            view = memoryview(data)
            with writing_locally():
                while view:
                    view = view[os.write(fd, view) :]
        with writing_locally():
            os.fchmod(fd, member.mode & 0o755)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    with writing_locally():
        os.close(fd)  # (a network file system may say only here that the disk is full)


def _check_link(name: str, target: str, symlinks: dict[str, str]) -> None:
    """A link must point inside `base`, and neither it nor the way to its target may pass
    through another link: then where it points is what its text says."""
    if not target or target.startswith("/"):
        raise PermanentError(f"refusing link {name!r} -> {target!r}: outside")
    parts = name.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in symlinks:
            raise PermanentError(
                f"refusing link {name!r}: it lies in the link {'/'.join(parts[:i])!r}"
            )
    path = parts[:-1]
    steps = [p for p in target.split("/") if p not in ("", ".")]
    for i, step in enumerate(steps):
        if step == "..":
            if len(path) <= 1:
                raise PermanentError(f"refusing link {name!r} -> {target!r}: outside")
            path.pop()
            continue
        path.append(step)
        if "/".join(path) in symlinks and i < len(steps) - 1:
            raise PermanentError(
                f"refusing link {name!r} -> {target!r}: it passes through "
                f"the link {'/'.join(path)!r}"
            )
