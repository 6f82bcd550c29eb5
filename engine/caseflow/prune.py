"""`caseflow prune`: ended cases leave the store, so that a store used for years stays small.

What goes: a case that ended (a terminal state of the spec) before the cut-off, with every
row keyed by it (its history), once nothing is left to do for it: its wrap-up done (its job
stopped, its slot freed, its folder archived, its hook run), no operator request waiting.
What stays: its results folder, its archived folder, its kept job logs; nothing on disk is
touched but the database (and the export, when one is asked for).

What must stay in the store: the newest case of a folder that is still in the inbox. The
daemon tells a new folder from a known one by the cases in the store (caseflow.inbox: at
its start, each inbox folder name keeps its latest case's inode); without that case, the
folder would be taken for a new copy at the next start, and its job would run again. Such
cases are kept and listed (`kept`), saying why; once the folder has left the inbox (moved,
deleted, archived), a later prune takes the case.

The command line plans (`plan`), lists and asks, then `carry_out` plans again (what changed
meanwhile stays: a retried case, a folder put back), writes the export, and only when that
is safely on disk removes the cases in one transaction. The model-based test calls the same
two functions.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .casefolder import inode_of
from .errors import CaseflowError
from .store import CaseRow, Store
from .views import case_json, history_json


class ExportError(CaseflowError):
    """The export could not be written (nothing was removed)."""


@dataclass
class Plan:
    before: float  # the cut-off: cases that ended before this time (seconds since the epoch)
    prune: list[CaseRow] = field(default_factory=list)  # to remove
    kept: list[CaseRow] = field(default_factory=list)  # ended, but their folder is in the inbox
    unsettled: list[CaseRow] = field(default_factory=list)  # ended; wrap-up or request pending


@dataclass
class Outcome:
    removed: list[CaseRow]  # removed from the store (and exported first, if asked)
    changed: list[CaseRow]  # planned, but changed meanwhile (or their folder is back in the
    # inbox): left as they are
    exported: int = 0  # lines written to the export (a case changed between the export and
    # the removal has its line and stays)


def settled(row: CaseRow) -> bool:
    """Nothing is left to do for an ended case: its wrap-up is done (which stops a job that
    may run and frees the slot), no request of an operator waits, no slot is held."""
    return not row.wrapup and row.request is None and row.slot_id is None


def _inbox_entries(inbox: Path) -> tuple[set[str], set[str]]:
    """The names in the inbox and the inodes of its folders (a name that is not UTF-8 is
    stored escaped, so its case is found by its folder's inode)."""
    names: set[str] = set()
    inodes: set[str] = set()
    try:
        entries = list(os.scandir(inbox))
    except FileNotFoundError:
        return names, inodes
    for e in entries:
        names.add(e.name)
        inode = inode_of(Path(e.path))
        if inode is not None:
            inodes.add(inode)
    return names, inodes


def plan(store: Store, inbox: Path, before: float, terminal: Iterable[str]) -> Plan:
    """What a prune of the cases that ended before `before` would do now."""
    out = Plan(before)
    ended = store.ended_before(before, terminal)
    if not ended:
        return out
    names, inodes = _inbox_entries(inbox)
    # the newest case of each folder path (of all cases: an active one counts too)
    newest = store.newest_per_folder()
    for row in ended:
        path = Path(row.local_path)
        if not settled(row):
            out.unsettled.append(row)
        elif (
            path.parent == inbox
            and newest.get(row.local_path) == row.id
            and (path.name in names or (row.inode is not None and row.inode in inodes))
        ):
            out.kept.append(row)
        else:
            out.prune.append(row)
    return out


def carry_out(
    store: Store,
    inbox: Path,
    planned: Plan,
    terminal: Collection[str],
    export_to: Path | None = None,
) -> Outcome:
    """Remove the planned cases that are still as they were planned (plan again: a case
    retried, or whose folder came back into the inbox, stays), after writing them to
    `export_to` (JSON lines) when given. Raises ExportError, removing nothing, when the
    export fails."""
    now = plan(store, inbox, planned.before, terminal)
    fresh = {r.id: r for r in now.prune}
    go = [
        fresh[r.id]
        for r in planned.prune
        if r.id in fresh
        and (fresh[r.id].state, fresh[r.id].run, fresh[r.id].updated_at)
        == (r.state, r.run, r.updated_at)
    ]
    if export_to is not None and go:
        export(store, go, export_to)
    removed = set(store.delete_ended(go))
    return Outcome(
        removed=[r for r in go if r.id in removed],
        changed=[r for r in planned.prune if r.id not in removed],
        exported=len(go) if export_to is not None else 0,
    )


# -- the export ----------------------------------------------------------------------------
def is_export(path: Path) -> bool:
    """The file is empty or an export of an earlier prune (its first line a case with its
    history)."""
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    if not first.strip():
        return True
    try:
        line = json.loads(first)
    except ValueError:
        return False
    return isinstance(line, dict) and "id" in line and "history" in line


def check_export(path: Path) -> None:
    """Raise ExportError unless `path` can take an export: a new file in a folder that
    exists, or an earlier export (asked before anything is listed or removed)."""
    target = Path(os.path.realpath(path))
    if not target.parent.is_dir():
        raise ExportError(f"--export {path}: the folder {target.parent} does not exist")
    if not target.exists():
        return
    if not target.is_file():
        raise ExportError(f"--export {path}: not a file")
    try:
        earlier = is_export(target)
    except OSError as exc:
        raise ExportError(f"--export {path}: {exc.strerror or exc}") from exc
    if not earlier:
        raise ExportError(
            f"--export {path}: the file exists and is not an export of `caseflow prune` "
            "(JSON lines of cases); name a new file, or an earlier export to add to"
        )


def export(store: Store, rows: list[CaseRow], path: Path) -> None:
    """Write the cases, one JSON object a line (`status --json`'s keys and `history`), after
    the lines of an earlier export at `path` if there is one. Atomic: a temporary file in the
    same folder, synced, renamed over `path`, the folder synced; a failure leaves `path` as
    it was."""
    check_export(path)
    target = Path(os.path.realpath(path))  # a link to an export: the file it names is written
    folder, earlier = target.parent, target.exists()
    try:
        mode = os.stat(target).st_mode & 0o777 if earlier else 0o666 & ~_umask()
        histories = store.histories([r.id for r in rows])
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise ExportError(f"--export {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            if earlier:
                with open(target, "rb") as old:
                    shutil.copyfileobj(old, out)
                    if out.tell() and not _ends_with_newline(old):
                        out.write(b"\n")
            for r in rows:
                line = case_json(r, True)
                line["history"] = history_json(histories[r.id])
                out.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself is on disk before any case is removed
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ExportError(f"--export {path}: {exc.strerror or exc}") from exc
        raise


def _ends_with_newline(f) -> bool:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
