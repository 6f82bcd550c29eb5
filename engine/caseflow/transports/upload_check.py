"""What a copy must be: the listing and its digest, the checksums, and their differences.

The remote side lists a folder as NUL-terminated "<type> <size> <relative path>" items
(scripts/listing.sh), sorts them and takes their SHA-256: `listing_digest` computes the same
here from the manifest, so that one digest travels instead of the listing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..casefolder import Manifest
from .tarstream import CHUNK


def entries_set(entries) -> set:
    return {(e.path, e.kind, e.size if e.kind == "f" else 0) for e in entries}


def sum_line(path: str, digest: str) -> bytes:
    """A check line for `sha256sum -c` (names with a newline or backslash escaped)."""
    name = os.fsencode(path)
    if b"\n" in name or b"\\" in name or b"\r" in name:
        name = name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
        return b"\\" + digest.encode() + b"  " + name + b"\n"
    return digest.encode() + b"  " + name + b"\n"


def parse_sums(text: str) -> dict[str, str]:
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


def parse_listing(text: str) -> set[tuple[str, str, int]]:
    out = set()
    for item in text.split("\0"):
        if item:
            kind, size, rel = item.split(" ", 2)
            out.add((rel, kind, int(size)))
    return out


def listing_digest(entries) -> str:
    """SHA-256 of a listing as the remote side computes it (`LC_ALL=C sort -z | sha256sum`)."""
    lines = sorted(
        os.fsencode(f"{kind} {size if kind == 'f' else 0} ") + os.fsencode(path) + b"\0"
        for path, kind, size in entries
    )
    return hashlib.sha256(b"".join(lines)).hexdigest()


def difference(expected, got) -> str:
    got = got or set()
    missing = sorted(expected - got)[:3]
    extra = sorted(got - expected)[:3]
    return (
        "; ".join(
            filter(
                None,
                [
                    f"missing or different: {missing}" if missing else "",
                    f"unexpected: {extra}" if extra else "",
                ],
            )
        )
        or "differs"
    )


def local_sums(local_dir: Path, manifest: Manifest) -> dict[str, str]:
    out = {}
    for e in manifest.entries:
        if e.kind == "f":
            h = hashlib.sha256()
            with open(local_dir / e.path, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    h.update(chunk)
            out[e.path] = h.hexdigest()
    return out
