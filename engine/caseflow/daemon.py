"""`caseflow run`: the daemon around the engine.

It holds an exclusive lock next to the database (so a second daemon refuses to
start and names the first one's pid; the kernel drops the lock when the process
dies, so no crash leaves a lock to clear by hand), runs the watcher and the
tick loop, and on SIGTERM/SIGINT stops admitting work, gives in-flight steps a
grace period, and exits 0 within shutdown_timeout_seconds whatever the hosts do.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from . import metrics, web
from .config import permission_warnings
from .core.engine import Engine
from .errors import AlreadyRunning
from .inbox import InboxWatcher
from .run_folders import make_run_folders
from .service import reopen_log_files

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
    lines = [
        f"resumed {sum(counts.values())} active case(s): {cases}; "
        f"{getattr(engine, 'slots_reclaimed', 0)} slot(s) reclaimed"
    ]
    for h in config.hosts:
        t = h.transport
        where = (
            f"{t.user + '@' if t.user else ''}{t.host}{':' + str(t.port) if t.port else ''}"
            if t.kind == "ssh"
            else t.root
        )
        groups = ", ".join(
            f"{g.name} ({g.slots} slot{'s' if g.slots != 1 else ''})" for g in h.groups
        )
        lines.append(f"host {h.name}: {t.kind} {where}, {h.backend.kind} backend, groups {groups}")
    return lines


class Waker:
    """Wakes the daemon's loop: a self-pipe the loop waits on with select.

    Threads wake it with `wake` (a lock keeps a late wake-up from writing into a reused
    descriptor after `close`). A signal handler must take no lock the main thread may hold
    (setting an Event does, and the main loop may be inside that Event's lock when the signal
    arrives): it uses `wake_from_signal`, a bare write, and the kernel itself writes the
    signal's number into the pipe (`signal.set_wakeup_fd`).
    """

    def __init__(self):
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def fileno(self) -> int:
        """The descriptor to write to (for signal.set_wakeup_fd)."""
        return self._w

    def wake(self) -> None:
        with self._lock:
            if not self._closed:
                self.wake_from_signal()

    def wake_from_signal(self) -> None:
        """No lock: for a signal handler, which runs in the main thread, the only one that
        closes the pipe (it marks it closed first)."""
        if self._closed:
            return
        try:
            os.write(self._w, b"\0")
        except OSError:  # full: a wake-up is pending anyway
            pass

    def wait(self, timeout: float) -> None:
        """Until woken or `timeout` seconds passed; takes the pending wake-ups."""
        ready, _, _ = select.select([self._r], [], [], max(0.0, timeout))
        if ready:
            try:
                while os.read(self._r, 4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._r)
                os.close(self._w)


class Daemon:
    def __init__(self, config, engine: Engine | None = None):
        self.config = config
        self.lock = DaemonLock(config.database)
        self.engine = engine or Engine(config)
        self.waker = Waker()
        self.engine.waker = self.waker
        # activity older than this cannot hold up a quiet period any more: dropped
        # activity times on the monotonic clock: the quiet period is measured on it
        self.watcher = InboxWatcher(
            config.inbox,
            clock=self.engine.monotonic,
            wake=self.engine.wake,
            keep_seconds=max(2 * config.quiet_seconds, 10.0),
        )
        self.engine.watcher = self.watcher
        self.ready = threading.Event()
        self.web: web.StatusServer | None = None  # the status page, with `web:` in the config
        self._stopping = False  # plain attributes: a signal handler sets them
        self._reopen_logs = False
        self._stop_asked_at: float | None = None
        self._signals = False

    def request_stop(self, signum=None, frame=None):
        """Stop the daemon: from any thread, or as the signal handler (then it takes no
        lock: only plain attributes and a write to the pipe)."""
        if self._stop_asked_at is None:
            self._stop_asked_at = time.monotonic()
        self._stopping = True
        if signum is None:
            self.waker.wake()
        else:
            self.waker.wake_from_signal()

    def request_reopen_logs(self, signum: int | None = None, frame: object = None) -> None:
        """SIGHUP: open the log file again at the next turn of the loop (logrotate moved it);
        nothing else. As a signal handler it takes no lock (the loop reopens the file)."""
        self._reopen_logs = True
        self.waker.wake_from_signal()

    def install_signal_handlers(self) -> None:
        """For `caseflow run` (the main thread of the process): SIGTERM and SIGINT stop the
        daemon within shutdown_timeout_seconds, whatever the hosts do; SIGHUP reopens the
        log file."""
        signal.set_wakeup_fd(self.waker.fileno, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reopen_logs)
        self._signals = True

    def run(self) -> int:
        # the folders run works in are made only now, the config being checked: the
        # database's first (its lock lives there), the others once no daemon runs on it
        made = make_run_folders(self.config, only=("database",))
        self.lock.acquire()
        deadline = None
        try:
            made += make_run_folders(self.config)
            for line in made:
                log.info("%s", line)
            for warning in permission_warnings(self.config):
                log.warning("%s", warning)
            self.engine.start()
            self.web = web.start(self.config, self.engine.spec, self.engine)
            self.watcher.start()
            log.info(
                "caseflow running: inbox %s, database %s, %d group(s) on %d host(s)",
                self.config.inbox,
                self.config.database,
                len(self.config.groups),
                len(self.config.hosts),
            )
            for line in resumed(self.config, self.engine):
                log.info("%s", line)
            self.ready.set()
            while not self._stopping:
                if self._reopen_logs:
                    self._reopen_logs = False
                    reopened = reopen_log_files()  # (its first line goes to the new file)
                    log.info("SIGHUP: %s", "log file reopened" if reopened else "no log file")
                try:
                    with metrics.tick_timer():
                        self.engine.tick()
                    wait = self.engine.next_wakeup()
                except Exception:
                    log.exception("tick failed; trying again at the next tick")
                    wait = self.config.tick_seconds
                if not self._stopping:
                    self.waker.wait(wait)
            deadline = (
                self._stop_asked_at or time.monotonic()
            ) + self.config.shutdown_timeout_seconds
            if self._signals:
                self._exit_at(deadline)
            log.info(
                "stopping: no new work is admitted; waiting up to %.0f s for steps in flight",
                min(self.config.shutdown_grace_seconds, deadline - time.monotonic()),
            )
        finally:
            if self.web is not None:
                self.web.stop()
            self.watcher.stop()
            self.engine.shutdown(deadline)
            self.engine.store.close()
            if self._signals:
                signal.set_wakeup_fd(-1)
            self.waker.close()
            self.lock.release()
        log.info("stopped")
        return 0

    @staticmethod
    def _exit_at(deadline: float) -> None:
        """The process ends at `deadline` even if something still holds it (a thread stuck in
        a hung remote command that the interpreter would wait for at exit)."""

        def backstop():
            time.sleep(max(0.0, deadline - time.monotonic()))
            os.write(
                2,
                b"caseflow: shutdown_timeout_seconds reached; exiting now, the work "
                b"still in flight runs again at the next start\n",
            )
            os._exit(0)

        threading.Thread(target=backstop, name="caseflow-shutdown-timeout", daemon=True).start()
