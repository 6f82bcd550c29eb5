"""The status page's tail of a running job: its last lines, read on the host by the daemon.

However many pages show a case, its log is read on the host at most once per READ_SECONDS: a
page gets the tail read last, and when that is older a read starts in the host's short lane
(beside its polls: one at a time per case, never on a page's thread, and a shutdown does not
wait for it). A page's first look at a case waits up to FIRST_WAIT for the first read. At most
KEPT tails are kept, the ones asked for least recently go first; when a read was started is
kept for ASKED_KEPT cases (a client cycling through more running cases than KEPT evicted each
tail before it was asked again, and every request read on the host: a review), and a host is
read for tails at most HOST_READS_PER_SECOND times a second, however many cases and pages. A
host known not to answer is not asked; the page says so and keeps the lines read before.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..backends import JobRef
from ..core.workers import QUIET
from ..errors import CaseflowError
from ..job_output import last_lines, log_path, read_piece
from ..store import CaseRow
from ..views import Stamp, size

READ_SECONDS = 3.0  # at most one read on the host per case in this time
KEPT = 64  # cases whose tail is kept
ASKED_KEPT = 4096  # cases whose last read's start is kept (a float each)
HOST_READS_PER_SECOND = 4.0  # tail reads on one host, whatever the cases and pages
TAIL_BYTES = 64 * 1024  # read from the log's end: enough for the last lines
FIRST_WAIT = 2.0


@dataclass(frozen=True)
class Tail:
    lines: tuple[str, ...] = ()
    size: int | None = None  # of the log, at the read
    read_at: float | None = None  # when the lines were read (wall clock)
    source: str | None = None  # HOST:PATH
    problem: str | None = None  # why the last read gave no lines


class _Entry:
    def __init__(self) -> None:
        self.tail: Tail | None = None
        self.reading = False  # a read was started for it and has not settled


class LiveTails:
    def __init__(
        self,
        engine: Any,  # caseflow.core.engine.Engine: its hosts and lanes
        lines: int,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.lines = lines
        self.clock = clock
        self.monotonic = monotonic
        self.reads = 0  # reads done on hosts (a test counts them)
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        # monotonic: when a read of the case's tail last started; of a host's, the earliest
        # the next may start
        self._asked: OrderedDict[tuple[int, int], float] = OrderedDict()
        self._host_next: dict[str | None, float] = {}
        self._cond = threading.Condition()

    def tail(self, row: CaseRow) -> Tail:
        """The case's last lines as read last, starting a read when that one is old."""
        key = (row.id, row.run)
        with self._cond:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                while len(self._entries) > KEPT:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
            now = self.monotonic()
            name = row.slot_host or row.host
            due = now - self._asked.get(
                key, float("-inf")
            ) >= READ_SECONDS and now >= self._host_next.get(name, float("-inf"))
            if due:
                self._asked[key] = now
                self._asked.move_to_end(key)
                while len(self._asked) > ASKED_KEPT:
                    self._asked.popitem(last=False)
                self._host_next[name] = now + 1.0 / HOST_READS_PER_SECOND
                entry.reading = True
        if due:
            self._start(row, entry)
        with self._cond:  # a first read started for it: wait a little for its lines
            self._cond.wait_for(lambda: entry.tail is not None or not entry.reading, FIRST_WAIT)
            return entry.tail or Tail(problem="reading it on the host; it shows in a moment")

    def _start(self, row: CaseRow, entry: _Entry) -> None:
        name = row.slot_host or row.host
        host = self.engine.hosts.get(name)
        if host is None:
            self._settle(entry, Tail(problem=f"host {name!r} is not configured"))
        elif host.down:
            self._settle(
                entry,
                replace(
                    entry.tail or Tail(),
                    problem=f"host {name} does not answer; the output shows when it does",
                ),
            )
        else:
            if not self.engine.lanes.host_work(
                host, f"log-tail-{row.id}", self._read, host, row, entry
            ):  # a read of it is under way (for a tail evicted meanwhile)
                with self._cond:
                    entry.reading = False
                    self._cond.notify_all()

    def _read(self, host: Any, row: CaseRow, entry: _Entry) -> object:
        try:
            path = log_path(
                host.backend, JobRef(row.id, row.task_id or "", "", row.remote_path or "")
            )
            if path is None:
                tail = Tail(problem="its backend keeps no log file in the case folder")
            else:
                piece = read_piece(host.transport, path, -TAIL_BYTES, TAIL_BYTES)
                tail = Tail(
                    lines=tuple(last_lines(piece, self.lines)),
                    size=piece.size if piece else None,
                    read_at=self.clock(),
                    source=f"{host.name}:{path}",
                    problem=None if piece else "the job has not written its log yet",
                )
        except CaseflowError as exc:
            tail = replace(entry.tail or Tail(), problem=f"reading it on host {host.name}: {exc}")
        with self._cond:
            self.reads += 1
        self._settle(entry, tail)
        return QUIET  # nothing for the daemon's loop to do

    def _settle(self, entry: _Entry, tail: Tail) -> None:
        with self._cond:
            entry.tail, entry.reading = tail, False
            self._cond.notify_all()


def about_parts(log: dict) -> list[str]:
    """What the case page says above a job's last lines (`about` in /api/cases/ID/log): where
    they come from and, for a running job's, when they were read on its host."""
    if not log["live"]:
        if log["size"] is None:
            return ["No job log yet."]
        return [f"{log['source']} ({size(log['size'])}), the last {len(log['lines'])} lines:"]
    parts = ["The job's output"]
    if log["source"]:
        parts.append(f" in {log['source']}")
    if log["size"] is not None:
        parts.append(f" ({size(log['size'])})")
    if log["read_at"] is not None:
        parts += [
            ", read at ",
            Stamp(log["read_at"]),
            f" (again every {READ_SECONDS:g} s while it runs): the last {len(log['lines'])} lines",
        ]
    parts.append(f". {log['problem']}" if log["problem"] else ".")
    return parts
