"""A small bounded pool of daemon threads for long steps (uploads, submits).

Unlike concurrent.futures' pool, its threads do not keep the process alive:
on shutdown the engine waits a grace period for in-flight steps and then
abandons the rest, which is safe because every step can be run again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

log = logging.getLogger("caseflow.workers")


class WorkerPool:
    def __init__(self, size: int, name: str = "caseflow-worker"):
        self._queue: queue.Queue = queue.Queue()
        self._busy = 0
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(size)]
        for t in self._threads:
            t.start()

    def submit(self, fn, *args) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            self._busy += 1
        self._queue.put((fn, args))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # a step must never kill its worker
                log.exception("unhandled error in a worker step")
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    @property
    def busy(self) -> int:
        with self._cond:
            return self._busy

    def shutdown(self, grace: float) -> bool:
        """Stop taking work; wait up to `grace` seconds. True when nothing was abandoned."""
        deadline = time.monotonic() + grace
        with self._cond:
            self._closed = True
            while True:  # steps not started yet are dropped; the next run does them
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._busy -= 1
            while self._busy and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            done = self._busy == 0
        for _ in self._threads:
            self._queue.put(None)
        return done
