"""What caseflow reads from a local case folder: its manifest, its case.yaml, its quietness.

A case folder is checked once, when it is enqueued: everything in it must be a
readable regular file, a folder, or a symlink that stays inside the case.
The manifest (relative path, kind, size) is what an upload is verified against.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import yamlfile
from .errors import PermanentError

CASE_FILE = "case.yaml"
RESERVED = ".caseflow"  # the job's bookkeeping folder on the remote side
CASE_KEYS = {"group", "priority"}


@dataclass(frozen=True)
class Entry:
    path: str  # relative, with "/" separators
    kind: str  # "f" file, "d" folder, "l" symlink
    size: int  # bytes for files, 0 otherwise


@dataclass(frozen=True)
class Manifest:
    entries: tuple[Entry, ...]

    @property
    def file_count(self) -> int:
        return sum(1 for e in self.entries if e.kind == "f")

    @property
    def size_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def as_set(self) -> set[tuple[str, str, int]]:
        return {(e.path, e.kind, e.size) for e in self.entries}


def scan(folder: Path) -> Manifest:
    """Walk the case folder; raise PermanentError naming the first thing that cannot be sent."""
    folder = Path(folder)
    try:
        st = folder.lstat()
    except FileNotFoundError:
        raise PermanentError(f"case folder {folder} no longer exists") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PermanentError(f"{folder} is not a folder any more")
    root = os.path.realpath(folder)
    entries: list[Entry] = []

    def fail(rel, why):
        raise PermanentError(f"cannot send {rel!r}: {why}")

    def walk(path: str, rel: str) -> None:
        try:
            items = sorted(os.scandir(path), key=lambda e: e.name)
        except PermissionError:
            fail(rel or ".", "the folder is not readable (check its permissions)")
        except FileNotFoundError:
            raise PermanentError(f"case folder {folder} changed while it was read") from None
        for item in items:
            r = f"{rel}/{item.name}" if rel else item.name
            if not rel and item.name == RESERVED:
                fail(r, f"the name {RESERVED} is reserved for caseflow's own files")
            s = item.stat(follow_symlinks=False)
            if stat.S_ISLNK(s.st_mode):
                target = os.path.realpath(item.path)
                if target != root and not target.startswith(root + os.sep):
                    fail(r, "a symlink pointing outside the case folder")
                if not os.path.exists(item.path):
                    fail(r, "a broken symlink")
                entries.append(Entry(r, "l", 0))
            elif stat.S_ISDIR(s.st_mode):
                entries.append(Entry(r, "d", 0))
                walk(item.path, r)
            elif stat.S_ISREG(s.st_mode):
                if not os.access(item.path, os.R_OK):
                    fail(r, "the file is not readable (check its permissions)")
                entries.append(Entry(r, "f", s.st_size))
            else:
                kind = (
                    "a fifo"
                    if stat.S_ISFIFO(s.st_mode)
                    else "a socket"
                    if stat.S_ISSOCK(s.st_mode)
                    else "a device file"
                )
                fail(r, f"{kind}, not a regular file")

    walk(str(folder), "")
    if not any(e.kind == "f" for e in entries):
        raise PermanentError("the case folder holds no files")
    return Manifest(tuple(entries))


def read_case_file(folder: Path, known_groups: list[str], default_group: str) -> dict:
    """The settings in the case's optional case.yaml, checked: {"group": ..., "priority": ...}."""
    path = Path(folder) / CASE_FILE
    settings = {"group": default_group, "priority": 0}
    if not path.exists():
        return settings
    try:
        data = yamlfile.load(path.read_text(encoding="utf-8"), name=CASE_FILE)
    except (OSError, UnicodeDecodeError) as exc:
        raise PermanentError(f"{CASE_FILE}: cannot be read: {exc}") from exc
    except yamlfile.DuplicateKey as exc:
        raise PermanentError(f"{CASE_FILE}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PermanentError(f"{CASE_FILE}: not valid YAML: {exc}") from exc
    if data is None:
        return settings
    if not isinstance(data, dict):
        raise PermanentError(f"{CASE_FILE}: expected a mapping such as 'group: {default_group}'")
    unknown = sorted(str(k) for k in data if k not in CASE_KEYS)
    if unknown:
        raise PermanentError(
            f"{CASE_FILE}: unknown key {unknown[0]!r} (known: {', '.join(sorted(CASE_KEYS))})"
        )
    group = data.get("group", default_group)
    if not isinstance(group, str):
        raise PermanentError(f"{CASE_FILE}: group: expected a group name, got {group!r}")
    if group not in known_groups:
        raise PermanentError(
            f"{CASE_FILE}: unknown group {group!r}; configured groups: {', '.join(known_groups)}"
        )
    settings["group"] = group
    priority = data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not -1000 <= priority <= 1000:
        raise PermanentError(
            f"{CASE_FILE}: priority: expected a whole number from -1000 to 1000, got {priority!r}"
        )
    settings["priority"] = priority
    return settings


def newest_change(folder: Path) -> float | None:
    """The latest ctime of the folder or anything inside it (None if it is gone).

    ctime cannot be set by copying tools (unlike mtime, which `cp -a` and rsync
    preserve), so it shows when the copy last touched the tree even if a
    file-system event was missed.
    """
    try:
        newest = os.lstat(folder).st_ctime
    except FileNotFoundError:
        return None
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_ctime)
            except FileNotFoundError:
                continue
    return newest


def short_name(name: str, limit: int = 180) -> str:
    """`name` cut to at most `limit` UTF-8 bytes (room for suffixes within NAME_MAX)."""
    data = os.fsencode(name)
    if len(data) <= limit:
        return name
    return os.fsdecode(data[:limit])


def shown_name(name: str) -> str:
    """A folder name that is not UTF-8 as the store keeps it: its odd bytes escaped."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def inode_of(path: Path) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"
