"""`caseflow run`: the daemon around the engine.

It holds an exclusive lock next to the database (so a second daemon refuses to
start and names the first one's pid; the kernel drops the lock when the process
dies, so no crash leaves a lock to clear by hand), runs the watcher and the
tick loop, and on SIGTERM/SIGINT stops admitting work, gives in-flight steps a
grace period, and exits 0.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import threading
from collections import Counter
from pathlib import Path

from . import metrics, web
from .config import permission_warnings
from .folders import make_run_folders
from .engine import Engine
from .errors import AlreadyRunning
from .watcher import InboxWatcher

log = logging.getLogger("caseflow.daemon")


class DaemonLock:
    def __init__(self, database: Path):
        self.database = Path(database)
        self.path = Path(f"{database}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = None
            try:
                text = os.pread(fd, 64, 0).decode().strip()
                pid = int(text) if text.isdigit() else None
            finally:
                os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise AlreadyRunning(self.database, pid) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def holder(self) -> int | None:
        """The pid of the daemon holding the lock, or None when none does."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                text = os.pread(fd, 64, 0).decode().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def resumed(config, engine: Engine) -> list[str]:
    """What a start takes over: the active cases per state, the slots freed, the hosts."""
    active = engine.spec.active_states
    counts = Counter(r.state for r in engine.store.cases(active))
    cases = ", ".join(f"{counts[s]} {s}" for s in active if counts[s]) or "none"
    lines = [f"resumed {sum(counts.values())} active case(s): {cases}; "
             f"{getattr(engine, 'slots_reclaimed', 0)} slot(s) reclaimed"]
    for h in config.hosts:
        t = h.transport
        where = (f"{t.user + '@' if t.user else ''}{t.host}{':' + str(t.port) if t.port else ''}"
                 if t.kind == "ssh" else t.root)
        groups = ", ".join(f"{g.name} ({g.slots} slot{'s' if g.slots != 1 else ''})"
                           for g in h.groups)
        lines.append(f"host {h.name}: {t.kind} {where}, {h.backend.kind} backend, "
                     f"groups {groups}")
    return lines


class Daemon:
    def __init__(self, config, engine: Engine | None = None):
        self.config = config
        self.stop_event = threading.Event()
        self.lock = DaemonLock(config.database)
        self.engine = engine or Engine(config)
        self.watcher = InboxWatcher(config.inbox, clock=self.engine.clock, wake=self.engine.wake)
        self.engine.watcher = self.watcher
        self.ready = threading.Event()
        self.web: web.StatusServer | None = None  # the status page, with `web:` in the config

    def request_stop(self, *_):
        self.stop_event.set()
        self.engine.wake()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> int:
        # the folders run works in are made only now, the config being checked: the
        # database's first (its lock lives there), the others once no daemon runs on it
        made = make_run_folders(self.config, only=("database",))
        self.lock.acquire()
        try:
            made += make_run_folders(self.config)
            for line in made:
                log.info("%s", line)
            for warning in permission_warnings(self.config):
                log.warning("%s", warning)
            self.engine.start()
            self.web = web.start(self.config, self.engine.spec, self.engine)
            self.watcher.start()
            log.info("caseflow running: inbox %s, database %s, %d group(s) on %d host(s)",
                     self.config.inbox, self.config.database, len(self.config.groups),
                     len(self.config.hosts))
            for line in resumed(self.config, self.engine):
                log.info("%s", line)
            self.ready.set()
            while not self.stop_event.is_set():
                self.engine.wake_event.clear()
                try:
                    with metrics.tick_timer():
                        self.engine.tick()
                    wait = self.engine.next_wakeup()
                except Exception:
                    log.exception("tick failed; trying again at the next tick")
                    wait = self.config.tick_seconds
                self.engine.wake_event.wait(wait)
            log.info("stopping: no new work is admitted; waiting up to %.0f s for steps in flight",
                     self.config.shutdown_grace_seconds)
        finally:
            if self.web is not None:
                self.web.stop()
            self.watcher.stop()
            self.engine.shutdown()
            self.engine.store.close()
            self.lock.release()
        log.info("stopped")
        return 0
