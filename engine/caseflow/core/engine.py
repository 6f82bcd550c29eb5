"""The engine: one tick advances every case that is due by one step.

Which step a state takes comes from the spec (`step:`); whether a move is legal is decided
by the machine built from the spec, and the triggers the engine fires itself are found by
their role in the spec. The engine only schedules: detection of new folders, operator
requests, due steps, batched polling, wrap-ups. Every remote call runs in the lane of the
case's host (caseflow.core.hosts), never on the tick thread; what a piece of work ran into becomes
the case's next move in one place, the retry policy (caseflow.retry).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ..backends import QueueBackend
from ..config import Config
from ..errors import PermanentError
from ..inbox import InboxFolders
from ..retry import short
from ..spec import FAIL, POLL, MachineSpec, load_spec
from ..store import CaseRow, Store
from ..transports import Transport
from . import jobs, wrapup
from .admission import Admission
from .case_model import Case
from .context import Wakes, Watches
from .hosts import Host, HostHealth, shut_down
from .lanes import Lanes
from .machine import CaseMachine, MachineError
from .operator_requests import OperatorRequests
from .outcomes import Outcomes
from .workers import InFlight

log = logging.getLogger("caseflow.engine")

# seconds until a case a drain holds back is looked at again (resuming the host wakes it at once)
DRAINED_RECHECK = 3600.0


class Engine:
    def __init__(
        self,
        config: Config,
        spec: MachineSpec | None = None,
        store: Store | None = None,
        transport: Transport | None = None,
        backend: QueueBackend | None = None,
        clock: Callable[[], float] = time.time,
        watcher: Watches | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.spec = spec or load_spec()
        self.store = store or Store(config.database)
        self.clock = clock  # the wall clock: times kept in the store
        # the in-memory timers (last poll, avoid-until, next probe, rescan) run on a clock that
        # is never stepped back; a test clock can offer both faces (`clock.monotonic`)
        self.monotonic = monotonic or getattr(clock, "monotonic", None) or time.monotonic
        self.watcher = watcher
        self.waker: Wakes | None = None  # the daemon's: wakes its loop
        self.machine = CaseMachine(self.spec)
        # the hosts, in config order; `transport`/`backend` given here are the first host's
        self.hosts: dict[str, Host] = {}
        for i, h in enumerate(config.hosts):
            self.hosts[h.name] = Host(h, transport if i == 0 else None, backend if i == 0 else None)
        self.health = HostHealth(
            self.hosts,
            self.store,
            config.retry,
            clock,
            self.monotonic,
            self.spec.slot_states,
            self.wake,
            on_pause=lambda name, problem: wrapup.host_paused(self, name, problem),
            health_seconds=config.health_seconds,
            low_disk_bytes=int(config.low_disk_gib * (1 << 30)),
        )
        self.folders = InboxFolders()
        self.inflight = InFlight(done=self.wake)
        self._tick_started = float("-inf")
        self._groups_checked = False
        self.instance = ""
        steps = {s.name: s for s in self.spec.states if s.step}
        self._steps = steps
        self._step_states = [n for n, st in steps.items() if st.step != POLL]
        self._poll_states = self.spec.poll_states
        self._slot_taking = set(self.spec.slot_taking_states)
        # the states whose step starts work on the case's host (an upload, a submit): none
        # of it on a drained host
        self._host_work = {
            s.name for s in self.spec.states if s.holds_slot and s.step and s.step != POLL
        }
        self.job_states = set(self.spec.job_states)
        # quiet periods, on the monotonic clock: case id -> (the folder's newest ctime at the
        # last look, when it last changed, when it was last looked at) (Case.is_quiet)
        self.quiet_since: dict[int, tuple[float | None, float, float]] = {}
        # stops under way: case id -> monotonic time of the first look (caseflow.core.jobs)
        self.stop_began: dict[int, float] = {}
        self.FAIL = self.spec.required_trigger(FAIL)
        self.outcomes = Outcomes(self)
        self.lanes = Lanes(self, self.outcomes)
        self.admission = Admission(self)
        self.requests = OperatorRequests(self)

    # -- hosts and their ports (created lazily: read-only commands never connect) ---------
    @property
    def first_host(self) -> Host:
        return next(iter(self.hosts.values()))

    @property
    def transport(self) -> Transport:
        """The first host's transport (the only host of a single-host config)."""
        return self.first_host.transport

    @property
    def backend(self) -> QueueBackend:
        return self.first_host.backend

    @property
    def pooled(self) -> bool:
        return any(h.lane is not None for h in self.hosts.values())

    def host_of(self, row: CaseRow) -> Host:
        """The host a case's slot (or upload) belongs to."""
        name = row.slot_host or row.host
        if name is None:
            return self.first_host
        host = self.hosts.get(name)
        if host is None:
            raise PermanentError(
                f"host {name!r} is no longer configured; configured hosts: " + ", ".join(self.hosts)
            )
        return host

    # -- life cycle --------------------------------------------------------------------
    def start(self, workers: bool = True) -> None:
        """Migrate the store, sync the slot pool with the config, reclaim leaked slots."""
        self.store.migrate()
        self.instance = self.store.instance_id()
        self.health.load()
        for line in self.store.sync_slots(self.config.hosts):
            log.info("%s", line)
        freed = self.store.reconcile_slots(self.spec.slot_states)
        for _slot_id, grp, idx, case_id, state in freed:
            log.warning("freed slot %s[%s] held by case %s (%s)", grp, idx, case_id, state)
        self.slots_reclaimed = len(freed)  # for the daemon's start-up summary
        self.folders.seed(self.config.inbox, self.store.folders())
        if workers:
            for host in self.hosts.values():
                host.open_lanes(self.config.workers)

    def shutdown(self, deadline: float | None = None) -> bool:
        """Let steps in flight finish for up to shutdown_grace_seconds, never past the
        monotonic `deadline` (default: shutdown_timeout_seconds from now); then close."""
        now = time.monotonic()
        deadline = now + self.config.shutdown_timeout_seconds if deadline is None else deadline
        until = min(now + self.config.shutdown_grace_seconds, deadline)
        left = shut_down(self.hosts.values(), until, deadline)
        if left:
            log.warning("abandoned %d unfinished step(s); they run again at the next start", left)
        return left == 0

    def forget_folder(self, path: str, inode: str | None) -> None:
        """A case folder left the inbox (archived): a folder brought back there is a new case."""
        if os.path.dirname(path) == str(self.config.inbox):
            self.folders.left(os.path.basename(path))

    def last_activity(self, name: str) -> float | None:
        return self.watcher.last_activity(name) if self.watcher else None

    def wake(self) -> None:
        if self.waker is not None:
            self.waker.wake()

    # -- the tick ----------------------------------------------------------------------
    def tick(self) -> None:
        now = self._tick_started = self.clock()
        mono = self.monotonic()
        self.health.sync_drains()
        self.detect(now)
        self.apply_requests()
        blocked: set[tuple] = set()  # (state, group) whose condition said "no" this tick
        # cases whose work is in flight are not read: a step that ends wakes the loop, and
        # 200 cases being uploaded were read again at each such wake-up (the pipeline
        # bench: most of the tick thread's time, taken from the lanes' SSH work)
        busy = self.inflight.case_ids()
        for row in self._due_steps(now, busy):
            state = self._steps[row.state]
            step = state.step
            assert step is not None  # _steps holds the states that have one
            if row.reason and row.state in self.job_states:
                # to fail (or be cancelled) once the job its submit may have started is gone
                self.lanes.call(row, jobs.stop, self, row, short=True)
            elif state.worker and self.pooled:
                self.lanes.step(row, step)
            elif row.id not in self.inflight and (row.state, row.grp) not in blocked:
                if self.step(row, step) is None:
                    # e.g. no free slot of the group: the younger cases behind it wait too
                    blocked.add((row.state, row.grp))
        # running cases are read only when a host's poll is due (or they need more than a
        # poll): with a thousand of them running, most ticks need not load them at all
        poll_due = {
            n for n, h in self.hosts.items() if mono - h.last_poll >= self.config.poll_seconds
        }
        polled: dict[str, list[CaseRow]] = {}
        for row in self.store.due_cases(
            now, self._poll_states, unpolled_only=not poll_due, skip=() if poll_due else busy
        ):
            if row.job_outcome:
                jobs.finish(self, row)
            elif row.reason:  # to fail once its job is stopped
                self.lanes.call(row, jobs.stop, self, row, short=True)
            else:
                try:
                    polled.setdefault(self.host_of(row).name, []).append(row)
                except PermanentError as exc:
                    self.outcomes.fail(row.id, short(exc))
        for name, rows in polled.items():  # one status command per host, in its lane
            if name in poll_due:
                host = self.hosts[name]
                host.last_poll = mono
                self.lanes.host_work(host, "poll", self.poll, host, rows)
        for row in self.store.wrapups_due(now, skip=busy):
            self.lanes.call(row, self._wrap_up, row)
        for host in self.health.probes_due():
            self.lanes.host_work(host, "probe", self.health.probe, host)

    def _drained(self, row: CaseRow) -> bool:
        host = self.hosts.get(row.host or "")
        return host is not None and host.drain is not None

    def _due_steps(self, now: float, busy: frozenset[int]) -> list[CaseRow]:
        """The cases whose step is due. Cases waiting for a slot are read only as many as
        there are usable free slots of their group: 20,000 of them waiting cost 330-440 ms
        of CPU per tick when they were all read."""
        rows: list[CaseRow] = []
        for state in self._step_states:
            if state not in self._slot_taking:
                rows += self.store.due_cases(now, [state], skip=busy)
                continue
            if not self._groups_checked:  # the configured groups do not change while we run
                self._groups_checked = True
                rows += self.store.due_outside_groups(
                    now, [state], [g.name for g in self.config.groups]
                )
            for group, free in self.store.free_slot_counts().items():
                usable = self.health.usable_for(group)
                n = sum(count for host, count in free.items() if host in usable)
                if n:
                    rows += self.store.due_cases(now, [state], group=group, limit=n, skip=busy)
        return rows

    def next_wakeup(self) -> float:
        """Seconds until something is due (at most one tick).

        Cases already due were just tried: they are blocked (no free slot) or in
        the worker pool. Either way a tick's wait is right for them; a freed slot
        or a finished step wakes the loop early.
        """
        now = self.clock()
        wait = self.config.tick_seconds
        for nxt in (
            self.store.next_due(self._step_states, after=self._tick_started),
            self.store.next_wrapup(after=self._tick_started),
        ):
            if nxt is not None:
                wait = min(wait, nxt - now)
        if self.store.next_due(self._poll_states) is not None:
            last = min(h.last_poll for h in self.hosts.values())
            wait = min(wait, last + self.config.poll_seconds - self.monotonic())
        return max(0.02, wait)

    # -- detection ---------------------------------------------------------------------
    def detect(self, now: float) -> list[int]:
        """Turn new inbox folders into `detected` cases (caseflow.core.admission)."""
        return self.admission.detect(now)

    # -- one step of one case, and what it ran into -----------------------------------------
    def step(self, row: CaseRow, trigger: str, **kwargs: Any) -> bool | None:
        """Fire `trigger` for the case; what its callbacks raise goes to the retry policy.

        True if the case moved; None if a condition said "not now" without saying
        until when; False otherwise.
        """
        if (
            row.state in self._host_work
            and trigger == self._steps[row.state].step  # its upload or submit, not a fail
            and not row.reason
            and self._drained(row)
        ):
            # its host is drained, also if it was after the step was handed to its lane (a
            # review found a queued submit that ran after the drain): no upload or submit
            # starts there; the case waits, and resuming the host makes it due at once
            self.store.reschedule(row.id, row.state, self.clock() + DRAINED_RECHECK)
            return False
        case = Case(row, self)
        try:
            with self.machine.bound(case):
                moved = case.trigger(trigger, **kwargs)
            if moved:
                return True
            if case.not_before is None:
                return None
            self.store.reschedule(row.id, row.state, case.not_before)
        except MachineError as exc:
            log.warning("case %s: %s is not allowed now: %s", row.id, trigger, exc)
        except Exception as exc:  # a bug in a step ends the case, visibly (not a silent loop)
            self.outcomes.settle(row, trigger, exc, bug_fails=True)
        return False

    def _wrap_up(self, row: CaseRow) -> None:
        try:
            wrapup.wrap_up(self, row)
        except Exception as exc:  # a bug: backed off, logged once per backoff
            self.outcomes.settle(row, "wrap-up", exc, patient=True)

    # -- the jobs of running cases (caseflow.core.jobs) --------------------------------------
    def poll(self, host: Host, rows: list[CaseRow]) -> object:
        """Ask the host's queue about all its running cases in one call; act on the answers
        (QUIET when there was nothing to act on, caseflow.core.workers)."""
        return jobs.poll(self, host, rows)

    # -- operator requests (caseflow.core.operator_requests) ------------------------------
    def apply_requests(self) -> None:
        self.requests.apply_all()

    def apply_request(self, row: CaseRow) -> bool:
        return self.requests.apply(row)
