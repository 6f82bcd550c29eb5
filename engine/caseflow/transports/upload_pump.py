"""Sending on several channels at once, from one thread.

An upload keeps several channels busy (tar streams, byte ranges) so that enough windows are in
flight across a long link. A thread per channel made them fight over paramiko's transport
lock and the GIL at every 32 KiB packet: sending 512 MiB (the bench's sshd, this 2-core
machine, load 3-4), 2 channels on loopback moved 164 MiB/s for 3.57 s of CPU per GiB with a
thread each, 215 MiB/s and 2.79 s/GiB from one thread; 8 channels across 50 ms, 107 MiB/s
either way, for 5.11 and 3.34 s/GiB. So one thread sends: it goes round the channels, sends
on each whose window is open (as much as the window takes, without waiting), and waits
briefly when no window is open.

A channel without `send_ready` (a transport whose channels cannot say whether a send would
wait) is sent to with `sendall`.
"""

from __future__ import annotations

import time

from .ssh_packets import sender
from .tarstream import Counter

_WAIT_MIN, _WAIT_MAX = 0.0002, 0.002  # seconds between looks when no window is open


class Job:
    """One channel and the data it is to carry: an iterator of (memoryview, file bytes in
    it); the next item is asked for only once the last one is sent (its buffer is reused)."""

    def __init__(self, chan, chunks):
        self.chan = chan
        self.send = sender(chan)  # several packets to a write where it can (ssh_packets.py)
        self.chunks = chunks
        self.view: memoryview | None = None
        self.file_bytes = 0
        self.complete = False  # all of it sent
        self.local_error: BaseException | None = None  # raised by `chunks` (a local file)
        self.send_error: Exception | None = None  # sending failed (the connection)
        # ending the channel failed otherwise: the transport's verdict (upload_streams.finish)
        self.end_error: Exception | None = None

    @property
    def failed(self) -> bool:
        return self.local_error is not None or self.send_error is not None


def pump(jobs: list[Job], counter: Counter, stop_on_error: bool = True, joining=None) -> None:
    """Send every job's data. A job whose data raises, or whose channel fails, stops (and,
    with `stop_on_error`, so do the others: their data is then not complete). `joining`:
    channels still opening (`pending`, and `ready()`: the jobs of those now open, which may
    raise the failure of one); each job joins as its channel opens (and is appended to
    `jobs`), and the pump ends once none is pending (none joins after a failure)."""
    active = list(jobs)
    wait = _WAIT_MIN
    while True:
        if joining is not None and joining.pending:
            if stop_on_error and any(job.failed for job in jobs):
                joining = None  # the caller closes what is still opening
            else:
                new = joining.ready()
                jobs += new
                active += new
        if not active:
            if joining is None or not joining.pending:
                return
            time.sleep(wait)
            wait = min(_WAIT_MAX, wait * 2)
            continue
        moved = False
        for job in list(active):
            if job not in active:  # all stopped by another's failure
                break
            if job.view is None:
                try:
                    job.view, job.file_bytes = next(job.chunks)
                except StopIteration:
                    job.complete = True
                    active.remove(job)
                    continue
                except Exception as exc:  # a local file: the caller says what it means
                    job.local_error = exc
                    active.remove(job)
                    if stop_on_error:
                        active.clear()
                    continue
            try:
                ready = getattr(job.chan, "send_ready", None)
                if ready is None or job.send is None:
                    job.chan.sendall(job.view)
                    n = len(job.view)
                elif not ready():
                    continue
                else:
                    n = job.send(job.view)
                    if n <= 0:
                        raise EOFError("the channel was closed")
            except (TimeoutError, OSError, EOFError) as exc:
                job.send_error = exc
                active.remove(job)
                if stop_on_error:
                    active.clear()
                continue
            moved = True
            job.view = job.view[n:]
            if not len(job.view):
                job.view = None
                counter.add(job.file_bytes)
        if moved:
            wait = _WAIT_MIN
        elif active:
            time.sleep(wait)
            wait = min(_WAIT_MAX, wait * 2)
