"""A small bounded pool of daemon threads for remote work (one per host: its lane).

Unlike concurrent.futures' pool, its threads do not keep the process alive: on shutdown
the engine waits a grace period for in-flight steps and then abandons the rest, which is
safe because every step can be run again. Work that need not be waited for (a poll, a
probe: they change nothing a restart would miss) is abandoned at once, so a host whose
commands hang cannot hold up a shutdown.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

Key = Hashable  # a case id, or (work, host name) for a host's own work

log = logging.getLogger("caseflow.workers")

# What a piece of work returns when it changed nothing a tick would act on: the loop is not
# woken for it. A poll that found every job still running woke the loop once a second for
# nothing, doubling the ticks of an idle daemon (CI: 2.33 ticks a second against the
# feature's "at most twice a second", tests/test_feature_gpu_slots.py).
QUIET = object()


class WorkerPool:
    def __init__(self, size: int, name: str = "caseflow-worker"):
        self._queue: queue.Queue = queue.Queue()
        self._busy = 0  # submitted and not finished
        self._awaited = 0  # of those, the ones a shutdown waits for
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., object], *args: Any, awaited: bool = True) -> None:
        """Run fn(*args) in a thread of the pool. `awaited`: a shutdown waits for it (up to
        its grace period); otherwise it is abandoned when the pool shuts down."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            self._busy += 1
            self._awaited += awaited
        self._queue.put((fn, args, awaited))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, awaited = item
            try:
                fn(*args)
            except Exception:  # a step must never kill its worker
                log.exception("unhandled error in a worker step")
            finally:
                with self._cond:
                    self._busy -= 1
                    self._awaited -= awaited
                    self._cond.notify_all()

    @property
    def busy(self) -> int:
        with self._cond:
            return self._busy

    def close(self) -> None:
        """Stop taking work; work not started yet is dropped (the next run does it)."""
        with self._cond:
            self._closed = True
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._busy -= 1
                    self._awaited -= item[2]

    def wait(self, until: float) -> int:
        """Wait until the awaited work in flight is done, or the monotonic time `until`;
        then let the threads end. Returns how many awaited pieces of work were abandoned."""
        with self._cond:
            while self._awaited and time.monotonic() < until:
                self._cond.wait(timeout=max(0.0, until - time.monotonic()))
            left = self._awaited
        for _ in self._threads:
            self._queue.put(None)
        return left

    def shutdown(self, grace: float) -> bool:
        """Stop taking work; wait up to `grace` seconds. True when nothing was abandoned."""
        self.close()
        return self.wait(time.monotonic() + grace) == 0


class InFlight:
    """Work by key (a case id, or (work, host name) for a host's own work): at most one
    piece per key at a time, run in a pool (a host's lane) or inline without one; `done` is
    called after each piece (it wakes the loop) unless the piece returned QUIET."""

    def __init__(self, done: Callable[[], None]) -> None:
        self._keys: set[Key] = set()
        self._lock = threading.Lock()
        self.done = done

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._keys

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def case_ids(self) -> frozenset[int]:
        """The cases whose work is in flight now (a tick need not read them)."""
        with self._lock:
            return frozenset(k for k in self._keys if isinstance(k, int))

    def claim(self, key: Key) -> bool:
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def release(self, key: Key) -> None:
        with self._lock:
            self._keys.discard(key)

    def run(
        self,
        pool: WorkerPool | None,
        key: Key,
        fn: Callable[..., object],
        args: tuple,
        awaited: bool = True,
    ) -> None:
        """Run fn(*args) for a claimed key; the key is released when it is done."""
        if pool is None:
            self._run(fn, key, args)
            return
        try:
            pool.submit(self._run, fn, key, args, awaited=awaited)
        except RuntimeError:  # shutting down
            self.release(key)

    def _run(self, fn: Callable[..., object], key: Key, args: tuple) -> None:
        result = None
        try:
            result = fn(*args)
        except Exception:  # every piece of work settles its errors; this is a bug in that
            log.exception("unexpected error in %s (%s)", fn.__name__, key)
        finally:
            self.release(key)
            if result is not QUIET:
                self.done()
