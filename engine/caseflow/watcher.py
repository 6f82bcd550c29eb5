"""Watches the inbox with watchdog (inotify on Linux), recursively.

It only records what it saw: which top-level folders appeared or went away,
and when anything inside each last changed. The engine's tick turns that into
cases; the stability check reads the activity times. No timers of its own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("caseflow.watcher")


def case_name_of(inbox: str, path: str) -> str | None:
    """The top-level entry of the inbox that `path` lies in (None for the inbox itself)."""
    rel = os.path.relpath(path, inbox)
    if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
        return None
    return rel.split(os.sep, 1)[0]


def is_hidden(name: str) -> bool:
    return name.startswith(".")


class InboxWatcher(FileSystemEventHandler):
    def __init__(self, inbox: Path, clock=time.time, wake=None):
        self.inbox = str(Path(inbox).resolve())
        self.clock = clock
        self.wake = wake  # called after an event that may need the tick soon
        self._lock = threading.Lock()
        self._activity: dict[str, float] = {}
        self._appeared: set[str] = set()
        self._gone: set[str] = set()
        self._observer = None

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
                        nudge = True
        if nudge and self.wake:
            self.wake()

    # -- engine side -------------------------------------------------------------------
    def last_activity(self, name: str) -> float | None:
        with self._lock:
            return self._activity.get(name)

    def drain(self) -> tuple[set[str], set[str]]:
        """The folders that appeared and went away since the last call."""
        with self._lock:
            appeared, gone = self._appeared, self._gone
            self._appeared, self._gone = set(), set()
        return appeared, gone

    def forget(self, name: str) -> None:
        with self._lock:
            self._activity.pop(name, None)

    def start(self) -> None:
        self._observer = Observer()
        self._observer.schedule(self, self.inbox, recursive=True)
        self._observer.daemon = True
        self._observer.start()
        log.info("watching %s", self.inbox)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None
