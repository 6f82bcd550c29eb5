"""Watches the inbox with watchdog (inotify on Linux), recursively.

It only records what it saw: which top-level folders appeared or went away,
and when anything inside each last changed. The engine's tick turns that into
cases (`InboxFolders` tells a new folder from a known one); the stability check
reads the activity times. No timers of its own: activity older than `keep_seconds`
(it can no longer hold up a quiet period) is dropped when the engine drains.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from .casefolder import inode_of, shown_name

log = logging.getLogger("caseflow.watcher")


def case_name_of(inbox: str, path: str) -> str | None:
    """The top-level entry of the inbox that `path` lies in (None for the inbox itself)."""
    rel = os.path.relpath(path, inbox)
    if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
        return None
    return rel.split(os.sep, 1)[0]


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def undecodable(inbox: Path) -> dict[str, tuple[str, str | None]]:
    """The inbox's folders whose names are not UTF-8: name as shown -> (the name as Python
    has it, its inode)."""
    out: dict[str, tuple[str, str | None]] = {}
    try:
        names = os.listdir(inbox)
    except OSError:
        return out
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            out[shown_name(name)] = (name, inode_of(inbox / name))
    return out


class InboxFolders:
    """The inbox folders that are cases now: name -> the inode of the folder its case was
    made from. A folder is new (a new case) when its name is not here, or when it has
    another inode (it was replaced). A name leaves when its folder is seen to go (an event,
    a full listing without it, archiving), so a folder copied in again becomes a case even
    when the file system gives it the old folder's inode (ext4 reused it in 198 of 200
    delete-and-recreate cycles); a folder never seen to leave is never admitted twice."""

    def __init__(self):
        self._inode: dict[str, str] = {}

    def seed(self, inbox: Path, folders) -> None:
        """The cases' folders (local_path, inode, ...) from the store, oldest first: each
        name keeps its latest case's inode. A folder whose name is not UTF-8 is in the store
        under its name as shown (`caf\\xe9`): it is matched to the folder of that inode here
        (else it became a new failed case at every start)."""
        shown = undecodable(inbox)
        for local_path, inode, *_ in folders:
            path = Path(local_path)
            if path.parent == inbox and inode is not None:
                real = shown.get(path.name)
                name = real[0] if real is not None and real[1] == inode else path.name
                self._inode[name] = inode

    def is_new(self, name: str, inode: str) -> bool:
        return self._inode.get(name) != inode

    def admit(self, name: str, inode: str) -> None:
        self._inode[name] = inode

    def left(self, name: str) -> None:
        self._inode.pop(name, None)

    def names(self) -> set[str]:
        return set(self._inode)

    def changes(
        self, inbox: Path, appeared: set[str], gone: set[str], listing: set[str] | None = None
    ) -> tuple[list[tuple[str, str]], set[str]]:
        """What the watcher saw (and a full `listing` of the inbox, when one was made) as
        (the folders that are new cases, as (name, inode), in name order; the names seen to
        leave). The caller admits each new one once its case exists."""
        appeared, gone = set(appeared), set(gone)
        if listing is not None:
            gone |= self.names() - listing
            appeared |= listing
        for name in gone:  # it left: a folder of that name is a new case, even one that is
            self.left(name)  # already back with the old folder's inode
            if os.path.lexists(os.path.join(inbox, name)):
                appeared.add(name)
        new = []
        for name in sorted(appeared):
            path = Path(inbox) / name
            if is_hidden(name) or path.is_symlink() or not path.is_dir():
                continue
            inode = inode_of(path)
            if inode is not None and self.is_new(name, inode):
                new.append((name, inode))
        return new, gone

    def __len__(self) -> int:
        return len(self._inode)


class InboxWatcher(FileSystemEventHandler):
    def __init__(self, inbox: Path, clock=time.time, wake=None, keep_seconds: float = 60.0):
        self.inbox = str(Path(inbox).resolve())
        self.clock = clock
        self.wake = wake  # called after an event that may need the tick soon
        self.keep_seconds = keep_seconds
        self._next_prune = float("-inf")
        self._lock = threading.Lock()
        self._activity: dict[str, float] = {}
        self._appeared: set[str] = set()
        self._gone: set[str] = set()
        self._observer: BaseObserver | None = None

    # -- watchdog callbacks (observer thread) ------------------------------------------
    def on_any_event(self, event):
        if event.event_type in ("opened", "closed_no_write"):
            return
        now = self.clock()
        paths = [event.src_path]
        if getattr(event, "dest_path", None):
            paths.append(event.dest_path)
        nudge = False
        with self._lock:
            for i, p in enumerate(paths):
                p = os.fsdecode(p)
                name = case_name_of(self.inbox, p)
                if name is None or is_hidden(name):
                    continue
                self._activity[name] = now
                top_level = os.path.dirname(p) == self.inbox
                if top_level and event.is_directory:
                    if event.event_type == "created" or (event.event_type == "moved" and i == 1):
                        self._appeared.add(name)
                        nudge = True
                    elif event.event_type == "deleted" or (event.event_type == "moved" and i == 0):
                        self._gone.add(name)
                        self._activity.pop(name, None)
                        nudge = True
        if nudge and self.wake:
            self.wake()

    # -- engine side -------------------------------------------------------------------
    def last_activity(self, name: str) -> float | None:
        with self._lock:
            return self._activity.get(name)

    def drain(self) -> tuple[set[str], set[str]]:
        """The folders that appeared and went away since the last call."""
        now = self.clock()
        with self._lock:
            appeared, gone = self._appeared, self._gone
            self._appeared, self._gone = set(), set()
            if now >= self._next_prune:  # at most once a second: a dict scan per tick is waste
                self._next_prune = now + 1.0
                old = now - self.keep_seconds
                for name in [n for n, t in self._activity.items() if t < old]:
                    del self._activity[name]
        return appeared, gone

    def start(self) -> None:
        observer = self._observer = Observer()
        observer.schedule(self, self.inbox, recursive=True)
        observer.daemon = True
        observer.start()
        log.info("watching %s", self.inbox)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None
