"""A job's output read on its host while it runs, and how it is shown without harm.

Every backend keeps the job's combined output in a file of the case folder on the host
(`QueueBackend.log_file`: the direct runner's and pueue's wrapper write `.caseflow/job.log`,
Slurm and Grid Engine their `.caseflow/*.out`), the file the engine fetches home when the job
ends. `caseflow logs -f` and the status page's tail read that file where it grows, from a byte
offset, one command per read (transports/scripts/read-log.sh: an `ls`, and `tail | head | od`
when there is more): nothing is written on the host, and pueue's own log, which cannot carry
output that is not UTF-8, is not needed.

What a job prints is not trusted: `Shown` turns its bytes into text that cannot drive the
operator's terminal (`clean`).
"""

from __future__ import annotations

import codecs
import posixpath
import re
from dataclasses import dataclass

from .backends import JobRef, QueueBackend
from .errors import TransientError
from .transports import Transport
from .transports.shell import script

READ = script("caseflow.transports", "read-log.sh")
PIECE_BYTES = 256 * 1024  # read at most per command; a reader behind reads again at once


def log_path(backend: QueueBackend, job: JobRef) -> str | None:
    """The job's log file on the host, or None when its backend keeps none in the case folder
    (or the case has no folder there yet)."""
    rel = backend.log_file(job)
    return posixpath.join(job.remote_path, rel) if rel and job.remote_path else None


@dataclass(frozen=True)
class Piece:
    """What one read found: the file's inode and size then, and its bytes from `start`."""

    inode: str
    size: int
    start: int
    data: bytes


def read_piece(transport: Transport, path: str, start: int, limit: int) -> Piece | None:
    """The bytes of the remote file `path` from `start` (negative: that many from its end), at
    most `limit`; None when there is no such file. Raises the transport's errors, and a
    TransientError when the answer is not the script's."""
    res = transport.run(["sh", "-c", READ, "caseflow-read-log", path, str(start), str(limit)])
    lines = res.stdout.split("\n")
    # (its first line of its own: a login shell may print something before it)
    at = next((i for i, line in enumerate(lines) if line.startswith("@@caseflow ")), None)
    head = lines[at].split() if at is not None else []
    if res.returncode == 0 and head == ["@@caseflow", "missing"]:
        return None
    if (
        res.returncode != 0
        or at is None
        or len(head) != 5
        or head[1] != "log"
        or not all(w.isdigit() for w in head[2:])
    ):
        said = " ".join((res.stderr or res.stdout).split())[:300]
        raise TransientError(
            f"reading {path} on {transport.name} failed (exit {res.returncode}): {said}"
        )
    try:
        data = bytes.fromhex("".join(lines[at + 1 :]))
    except ValueError:
        raise TransientError(
            f"reading {path} on {transport.name} gave something that is not od's hexadecimal"
        ) from None
    return Piece(head[2], int(head[3]), int(head[4]), data)


@dataclass(frozen=True)
class Read:
    data: bytes = b""
    missing: bool = False  # no such file (not written yet, or removed)
    more: bool = False  # the file holds more than was read: read again at once
    note: str | None = None  # what a person should know (left out, truncated, replaced)


class LogReader:
    """One log file on a host, read piece by piece from where the last read ended, as
    `tail -f` reads a file: one that got shorter than what was read (truncated) or that is
    another file now (another inode: rotated, or written anew) is read again from its start,
    saying so. The first read starts `first_bytes` before the end."""

    def __init__(self, transport: Transport, path: str, first_bytes: int):
        self.transport = transport
        self.path = path
        self.first_bytes = first_bytes
        self.offset: int | None = None  # bytes of the file read so far (None: nothing yet)
        self.inode: str | None = None

    def read(self) -> Read:
        start = -self.first_bytes if self.offset is None else self.offset
        piece = read_piece(self.transport, self.path, start, PIECE_BYTES)
        if piece is None:
            return Read(missing=True)
        if self.offset is not None and (piece.inode != self.inode or piece.size < self.offset):
            what = "was replaced" if piece.inode != self.inode else "got shorter"
            self.offset, self.inode = 0, piece.inode
            return Read(more=True, note=f"the log {what}; reading it from its start")
        note = None
        if self.offset is None and piece.start > 0:
            note = f"the first {piece.start:,} bytes of the log are left out"
        self.inode = piece.inode
        self.offset = piece.start + len(piece.data)
        return Read(piece.data, more=self.offset < piece.size, note=note)


# What a job prints that would drive the operator's terminal or mislead the eye is shown as an
# escape (`\x1b`, as views.printable shows a name): the C0 controls but tab and newline (ESC
# starts colours, cursor moves, a window title, OSC 52 writes the clipboard), DEL, the C1
# controls (some terminals take 0x9b for ESC [), and the bidirectional-text controls (a line
# that reads other than it is). The colours of `less -R` are not kept: telling a harmless
# sequence from a harmful one is what a terminal's parser does, and not one this code repeats.
_ESCAPED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    n = ord(m.group())
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def clean(text: str) -> str:
    """A job's text as it may be shown: CR LF is a newline, and so is a lone CR (a progress bar
    redrawing its line gets a line per redraw: nothing can write over what came before); the
    other controls as escapes (_ESCAPED)."""
    return _ESCAPED.sub(_escape, text.replace("\r\n", "\n").replace("\r", "\n"))


class Shown:
    """A job's bytes as text to show, fed piece by piece: UTF-8 decoded across pieces (a
    character cut between two reads comes out whole), bytes that are not UTF-8 as U+FFFD, a
    CR at a piece's end held until the next (half of a CR LF, perhaps), then `clean`."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._cr = False

    def feed(self, data: bytes, final: bool = False) -> str:
        text = ("\r" if self._cr else "") + self._decoder.decode(data, final)
        self._cr = text.endswith("\r") and not final
        return clean(text[:-1] if self._cr else text)


def last_lines(piece: Piece | None, count: int) -> list[str]:
    """The last `count` lines of a piece read from a file's end, shown as `Shown` shows them;
    a first line cut by where the piece starts is left out."""
    if piece is None:
        return []
    lines = Shown().feed(piece.data, final=True).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if piece.start > 0 and len(lines) > 1:
        lines = lines[1:]
    return lines[-count:]
