"""The GPU hosts as the engine sees them, and their health.

Each host has its own transport and queue backend (created on first use, so read-only
commands never connect) and its own lanes of worker threads: every remote call for the host
runs there, never on the tick thread, so a host whose commands hang delays only its own
cases. Long steps (uploads, submits, fetching results, clean-up) go to `lane`; short calls
(its poll, a probe, a cancel) to `short_lane`, so that no upload holds up a poll.

Health is what is wrong with a host and what follows from it. Every host is probed when the
daemon starts, then every `health_seconds`, and soon after any error of its work (one cheap
command: the remote root's free space, then the queue's own probe), so that a wrong host key
or a stopped queue daemon shows at once, not when a case arrives (issue 27). A problem
(authentication, a host key, the queue's daemon down) pauses its work; a host that cannot be
reached gets no new cases for `retry.max_seconds` and is probed once per reconnect interval,
and when it answers again its waiting cases go on at once; a nearly full remote disk is shown
(work goes on: an upload that finds the disk full is retried later). Each has a kind
(errors.HOST_PROBLEM_KINDS), a text that says what to do and a `since`, in the store, where
`caseflow status`, the page and the metrics read them. A notice (a paused pueue group) is
shown. The timers live in memory on a monotonic clock (a wall clock stepped back would stall
them).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable

from ..backends import QueueBackend, make_backend
from ..config import HostConfig
from ..errors import (
    CONFIG,
    DISK_LOW,
    QUEUE_DOWN,
    UNREACHABLE,
    HostError,
    PermanentError,
    TransientError,
)
from ..retry import Policy, short
from ..store import Store
from ..transports import Transport, make_transport
from .workers import WorkerPool

log = logging.getLogger("caseflow.engine")

# a host problem's text is kept whole: its end says what to do (a changed host key's
# known_hosts line and ssh-keygen command came to 620 characters with a long tmp path)
HOST_PROBLEM_LIMIT = 2000


class Host:
    def __init__(
        self,
        cfg: HostConfig,
        transport: Transport | None = None,
        backend: QueueBackend | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._transport = transport
        self._backend = backend
        # the lanes' first steps ask for these at once: without the lock two made a transport
        # each (two connections, one never closed; seen in a full-suite run)
        self._making = threading.Lock()
        self.lane: WorkerPool | None = None  # its worker threads, while running
        self.short_lane: WorkerPool | None = None
        self.problem: str | None = None  # what is wrong (shown); its kind:
        self.problem_kind: str | None = None  # errors.HOST_PROBLEM_KINDS
        self.free_bytes: int | None = None  # on its remote root's file system, at the last probe
        self.notice: str | None = None  # something a person should know (a paused group)
        self.drain: str | None = None  # an operator drained it (`caseflow host pause`): why
        # monotonic times
        self.avoid_until = float("-inf")  # unreachable or paused: no new cases before this
        self.last_poll = float("-inf")
        self.down = False  # the last contact failed: probed until it answers
        self.next_probe = float("-inf")  # probed at once when the daemon starts
        self.last_probe = float("-inf")

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            with self._making:
                if self._transport is None:
                    self._transport = make_transport(self.cfg.transport)
        return self._transport

    @property
    def backend(self) -> QueueBackend:
        if self._backend is None:
            transport = self.transport
            with self._making:
                if self._backend is None:
                    self._backend = make_backend(self.cfg, transport)
        return self._backend

    def serves(self, group: str | None) -> bool:
        return group is not None and self.cfg.group(group) is not None

    def takes_new_cases(self, now: float) -> bool:
        """Not drained, nor known to be unreachable or paused (after a while it is tried
        again); `now` is monotonic."""
        return self.drain is None and now >= self.avoid_until

    def open_lanes(self, size: int) -> None:
        self.lane = WorkerPool(size, name=f"caseflow-{self.name}")
        self.short_lane = WorkerPool(1, name=f"caseflow-{self.name}-short")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def shut_down(hosts: Iterable[Host], until: float, deadline: float) -> int:
    """Close the hosts' lanes, wait for their steps in flight until the monotonic `until`,
    then close their connections, never past `deadline`: a connection stuck in a hung
    command may not close in time, and is left to the process's exit. Returns how many
    steps were abandoned (each runs again at the next start)."""
    hosts = list(hosts)
    lanes = [lane for h in hosts for lane in (h.lane, h.short_lane) if lane is not None]
    for lane in lanes:
        lane.close()
    left = sum(lane.wait(until) for lane in lanes)
    for host in hosts:
        host.lane = host.short_lane = None
    closing = [
        threading.Thread(target=h.close, name=f"caseflow-close-{h.name}", daemon=True)
        for h in hosts
    ]
    for t in closing:
        t.start()
    for t in closing:
        t.join(max(0.0, deadline - time.monotonic()))
    return left


def is_unreachable(exc: BaseException) -> bool:
    """The error says the host cannot be reached at all (not that one command failed)."""
    return bool(getattr(exc, "unreachable", False))


class HostHealth:
    """Problems, probes, avoid-until and notices of the hosts.

    `clock` is the wall clock (times in the store), `monotonic` the one for the timers;
    `slot_states` the states whose cases a host that answers again wakes; `wake` wakes the
    loop; `health_seconds` how often a host that seems healthy is probed; `low_disk_bytes`
    the free space on a host's remote root below which it is shown as short of disk (0:
    never).
    """

    def __init__(
        self,
        hosts: dict[str, Host],
        store: Store,
        retry: Policy,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        slot_states: list[str],
        wake: Callable[[], None],
        on_pause: Callable[[str, str], None] | None = None,
        health_seconds: float = 60.0,
        low_disk_bytes: int = 1 << 30,
    ) -> None:
        self.hosts = hosts
        self.store = store
        self.retry = retry
        self.clock = clock
        self.monotonic = monotonic
        self.slot_states = list(slot_states)
        self.wake = wake
        self.on_pause = on_pause  # (host name, problem): tells someone (on_host_paused)
        self.health_seconds = health_seconds
        self.low_disk_bytes = low_disk_bytes

    def load(self) -> None:
        """What the store says is wrong with the hosts (shown since an earlier run, until
        the first probe says otherwise)."""
        now = self.clock()
        for name, problem, _, kind in self.store.host_problems():
            if name in self.hosts:
                self.hosts[name].problem = problem
                self.hosts[name].problem_kind = kind
            else:  # a host no longer configured: nothing probes it; shown forever (a review)
                self.store.set_host_problem(name, None, now)
        for name, notice in self.store.host_notices():
            if name in self.hosts:
                self.hosts[name].notice = notice
            else:
                self.store.set_host_notice(name, None, now)

    def _set(self, host: Host, kind: str | None, problem: str | None) -> None:
        if problem == host.problem and kind == host.problem_kind:
            return
        host.problem, host.problem_kind = problem, kind
        if kind is None:
            self.store.set_host_problem(host.name, None, self.clock())
        else:
            self.store.set_host_problem(host.name, problem, self.clock(), kind)

    def pause(self, host: Host, exc: HostError) -> str:
        """The host cannot be used as configured: no new cases, probed, the problem shown
        (logged once). Returns the problem."""
        now = self.monotonic()
        message = short(exc, HOST_PROBLEM_LIMIT)
        host.avoid_until = now + self.retry.max_seconds
        # probed again after the longest backoff, or sooner when the error says so (a master
        # connection a person opens: checking for it costs nothing on the host)
        host.down = True
        host.next_probe = now + getattr(exc, "probe_seconds", self.retry.max_seconds)
        kind = getattr(exc, "kind", CONFIG)
        if message != host.problem:
            log.error("host %s: work paused: %s", host.name, message)
            new = kind != host.problem_kind
            self._set(host, kind, message)
            if new and self.on_pause is not None:  # once per pause, not per wording of it
                self.on_pause(host.name, message)
        return message

    def unreachable(self, host: Host, exc: BaseException | None = None) -> None:
        """The host could not be reached: no new cases for a while, and a cheap probe every
        reconnect interval, so its cases go on as soon as it answers (not after the rest of
        their backoff). Shown (from the first failure on) with what to do."""
        now = self.monotonic()
        host.avoid_until = now + self.retry.max_seconds
        if not host.down:
            host.down = True
            host.next_probe = now + self.probe_interval(host)
        if host.problem_kind is None or host.problem_kind == DISK_LOW:
            # a host paused for a problem it still has keeps it, and its since, while it is
            # also briefly unreachable (a blip reset a stopped pueued's since and ran the
            # hook again: a review); the transport's "not trying again for N s" changes at
            # every call: not shown
            cause = re.sub(r"; not trying again for \d+ s$", "", short(exc)) if exc else ""
            log.warning("host %s: unreachable: %s", host.name, cause or "no answer")
            self._set(
                host,
                UNREACHABLE,
                f"does not answer{': ' + cause if cause else ''}. Its cases wait and go on "
                f"as soon as it answers (probed every {self.probe_interval(host):g} s); "
                f"`caseflow check` tests the connection",
            )

    def answered(self, host: Host, queue: bool = True) -> None:
        """A command on the host worked: its problem is over; its waiting cases go on.
        `queue`: the queue answered too (a poll, a probe); only that ends a problem of the
        queue (its daemon down, its commands missing: an upload that worked meanwhile ended
        the pause, the submit after it paused the host again). A nearly full disk is ended
        only by a probe that finds room."""
        if host.problem_kind in (QUEUE_DOWN, CONFIG) and not queue:
            return
        host.avoid_until = float("-inf")
        if host.problem is not None and host.problem_kind != DISK_LOW:
            log.info("host %s: answers again (%s is over)", host.name, host.problem_kind)
            self._set(host, None, None)
        if host.down:
            host.down = False
            woken = self.store.wake_host(host.name, self.slot_states, self.clock())
            log.info("host %s answers again; %d waiting case(s) go on now", host.name, woken)
            self.wake()

    def errored(self, host: Host) -> None:
        """A step on the host failed (not for a reason that already says what is wrong):
        probe it soon, to show at once what the trouble is (e.g. its queue's daemon is
        down); at most once per reconnect interval."""
        host.next_probe = min(
            host.next_probe, max(self.monotonic(), host.last_probe + self.probe_interval(host))
        )

    def free_space(self, host: Host, free: int | None) -> None:
        """What the probe found free on the host's remote root."""
        host.free_bytes = free
        low = free is not None and free < self.low_disk_bytes
        if low and host.problem_kind in (None, DISK_LOW):
            gib = free / (1 << 30) if free is not None else 0.0
            text = (
                f"the remote root's file system has {gib:.1f} GiB free (less than low_disk_gib,"
                f" {self.low_disk_bytes / (1 << 30):g} GiB): uploads and jobs may fail for want"
                " of room; make room on the host"
            )
            if host.problem_kind != DISK_LOW:
                log.warning("host %s: %s", host.name, text)
            self._set(host, DISK_LOW, text)
        elif not low and host.problem_kind == DISK_LOW:
            log.info("host %s: its remote disk has room again", host.name)
            self._set(host, None, None)

    def sync_drains(self) -> None:
        """Follow the drains an operator set or lifted in the store (`caseflow host pause` /
        `resume`, also while no daemon ran): a drained host takes no new case, and its cases
        that hold a slot start no upload or submit; lifted, they are due at once."""
        drains = self.store.host_drains()
        for host in self.hosts.values():
            reason = drains.get(host.name, (None, 0.0))[0]
            if reason == host.drain:
                continue
            if reason is not None:
                log.info("host %s: drained: %s (running jobs go on)", host.name, reason)
            else:
                woken = self.store.wake_host(host.name, self.slot_states, self.clock())
                log.info("host %s: resumed; %d waiting case(s) go on now", host.name, woken)
                self.wake()
            host.drain = reason

    def note(self, host: Host, notice: str | None) -> None:
        if notice != host.notice:
            host.notice = notice
            self.store.set_host_notice(host.name, notice, self.clock())

    @staticmethod
    def probe_interval(host: Host) -> float:
        return max(1.0, getattr(host.cfg.transport, "reconnect_min_interval", 5.0))

    def probes_due(self) -> list[Host]:
        """Hosts to probe now (each at the daemon's start, a host that is down once per
        reconnect interval, one that seems well every health_seconds); each is due again
        one such interval later."""
        now = self.monotonic()
        due = [h for h in self.hosts.values() if now >= h.next_probe]
        for host in due:
            host.last_probe = now
            host.next_probe = now + (
                self.probe_interval(host) if host.down else self.health_seconds
            )
        return due

    def probe(self, host: Host) -> None:
        """One cheap command (in the host's lane): the free space of the remote root's file
        system, which also says the host answers; then the queue's own probe."""
        try:
            res = host.transport.run(
                ["sh", "-c", _FREE_SPACE, "probe", host.transport.path()], timeout=30
            )
            host.backend.probe()  # and its queue answers (e.g. pueue's daemon runs)
        except HostError as exc:
            self.pause(host, exc)
        except PermanentError as exc:  # the host or its queue cannot be used as they are
            self.pause(host, HostError(short(exc, HOST_PROBLEM_LIMIT), kind=CONFIG))
        except TransientError as exc:
            if is_unreachable(exc):
                self.unreachable(host, exc)
            else:
                log.debug("host %s: still not answering: %s", host.name, exc)
        else:
            self.answered(host)
            self.free_space(host, _free_bytes(res.stdout) if res.returncode == 0 else None)

    def usable_for(self, group: str | None) -> list[str]:
        """The hosts serving `group` that take new cases now."""
        now = self.monotonic()
        return [h.name for h in self.hosts.values() if h.serves(group) and h.takes_new_cases(now)]


# the free space (df -Pk's line) of the file system holding the remote root, or the nearest
# folder above it that exists (the root is made at the first upload); makes nothing
_FREE_SPACE = r"""
d=$1
while [ ! -e "$d" ]; do d=$(dirname -- "$d"); done
df -Pk -- "$d" | tail -1
"""


def _free_bytes(out: str) -> int | None:
    fields = out.split()
    return int(fields[3]) * 1024 if len(fields) >= 4 and fields[3].isdigit() else None
