"""The engine: one tick advances every case that is due by one step.

Which step a state takes comes from the spec (`step:`); whether a move is legal is decided
by the machine built from the spec, and the triggers the engine fires itself are found by
their role in the spec. The engine only schedules: detection of new folders, operator
requests, due steps, batched polling, wrap-ups. Every remote call runs in the lane of the
case's host (caseflow.hosts), never on the tick thread; what a piece of work ran into becomes
the case's next move in one place, the retry policy (caseflow.retry).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from . import admission, jobs, metrics, operator_requests, wrapup
from .case_model import Case
from .errors import HostError, PermanentError
from .hosts import Host, HostHealth, is_unreachable, shut_down
from .machine import CaseMachine, MachineError
from .retry import BUG, HOST, PERMANENT, STALE, GiveUp, Policy, Streak, after_error, kind_of, short
from .spec import FAIL, POLL, REQUEUE, MachineSpec, load_spec
from .store import CaseRow, Store
from .watcher import InboxFolders
from .workers import InFlight

if TYPE_CHECKING:  # the daemon's; it imports the engine
    from .daemon import Waker

log = logging.getLogger("caseflow.engine")


class Engine:
    def __init__(
        self,
        config,
        spec: MachineSpec | None = None,
        store: Store | None = None,
        transport=None,
        backend=None,
        clock=time.time,
        watcher=None,
        monotonic=None,
    ):
        self.config = config
        self.spec = spec or load_spec()
        self.store = store or Store(config.database)
        self.clock = clock  # the wall clock: times kept in the store
        # the in-memory timers (last poll, avoid-until, next probe, rescan) run on a clock that
        # is never stepped back; a test clock can offer both faces (`clock.monotonic`)
        self.monotonic = monotonic or getattr(clock, "monotonic", None) or time.monotonic
        self.watcher = watcher
        self.waker: Waker | None = None  # the daemon's: wakes its loop
        self.machine = CaseMachine(self.spec)
        self.policy = Policy.of(config.retry)
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
        )
        self.folders = InboxFolders()
        self.inflight = InFlight(done=self.wake)
        self.request_wait: dict[int, tuple[int, float]] = {}  # case id: (attempts, not before)
        self.next_rescan = float("-inf")  # monotonic time of the next full inbox listing
        self._tick_started = float("-inf")
        self._groups_checked = False
        self.instance = ""
        steps = {s.name: s for s in self.spec.states if s.step}
        self._steps = steps
        self._step_states = [n for n, st in steps.items() if st.step != POLL]
        self._poll_states = [n for n, st in steps.items() if st.step == POLL]
        self._slot_taking = set(self.spec.slot_taking_states)
        self.job_states = set(self.spec.job_states)
        # quiet periods, on the monotonic clock: case id -> (the folder's newest ctime at the
        # last look, when it last changed, when it was last looked at) (Case.is_quiet)
        self.quiet_since: dict[int, tuple[float | None, float, float]] = {}
        # stops under way: case id -> monotonic time of the first look (caseflow.jobs)
        self.stop_began: dict[int, float] = {}
        self.FAIL = self.spec.required_trigger(FAIL)
        self.REQUEUE = self.spec.trigger_for(REQUEUE)

    # -- hosts and their ports (created lazily: read-only commands never connect) ---------
    @property
    def first_host(self) -> Host:
        return next(iter(self.hosts.values()))

    @property
    def transport(self):
        """The first host's transport (the only host of a single-host config)."""
        return self.first_host.transport

    @property
    def backend(self):
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
                self._dispatch_call(row, jobs.stop, self, row, short=True)
            elif state.worker and self.pooled:
                self._dispatch(row, step)
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
                self._dispatch_call(row, jobs.stop, self, row, short=True)
            else:
                try:
                    polled.setdefault(self.host_of(row).name, []).append(row)
                except PermanentError as exc:
                    self.fail(row.id, short(exc))
        for name, rows in polled.items():  # one status command per host, in its lane
            if name in poll_due:
                host = self.hosts[name]
                host.last_poll = mono
                self._dispatch_host(host, "poll", self.poll, host, rows)
        for row in self.store.wrapups_due(now, skip=busy):
            self._dispatch_call(row, self._wrap_up, row)
        for host in self.health.probes_due():
            self._dispatch_host(host, "probe", self.health.probe, host)

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
        """Turn new inbox folders into `detected` cases (caseflow.admission)."""
        return admission.detect(self, now)

    # -- one step of one case, and what it ran into -----------------------------------------
    def step(self, row: CaseRow, trigger: str, **kwargs) -> bool | None:
        """Fire `trigger` for the case; what its callbacks raise goes to the retry policy.

        True if the case moved; None if a condition said "not now" without saying
        until when; False otherwise.
        """
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
            self._settle(row, trigger, exc, bug_fails=True)
        return False

    def fail(self, case_id: int, reason: str) -> bool:
        """End the case in failure. A case whose job may still run first stops it (in its
        host's short lane, caseflow.jobs.stop), showing the reason meanwhile; it keeps its
        slot until the job is seen gone (two jobs would share a GPU)."""
        row = self.store.get(case_id)
        if row is None or not self.machine.allowed(self.FAIL, row.state):
            return False
        if self.stop_first(row, reason):
            return False
        return bool(self.step(row, self.FAIL, reason=reason))

    def stop_first(self, row: CaseRow, reason: str) -> bool:
        """If a job of the case may exist (a state of the spec's `job_may_run`, its end not
        seen yet), mark the case to end with `reason` once the job is gone and return True:
        caseflow.jobs.stop sends TERM, then KILL after `stop_grace_seconds`, and ends the case
        when the job's processes are seen gone. A case in `uploaded` may have a job whose
        submit's answer was lost: the job is found by its label."""
        if row.state not in self.job_states or row.job_outcome or self._host_or_none(row) is None:
            return False
        if row.reason is None and self.store.set_stopping(row.id, row.state, reason, self.clock()):
            log.warning(
                "case %s %r: %s; stopping its job first (the case keeps its slot until then)",
                row.id,
                row.name,
                reason,
            )
            self.wake()
        return True

    def _settle(
        self,
        row: CaseRow,
        what: str,
        exc: BaseException,
        *,
        patient: bool = False,
        bug_fails: bool = False,
        trace: bool = True,
    ) -> None:
        """What the case's work (`what`) ran into becomes its next move: the retry policy.
        `patient`: never give up and never fail here (stopping a job, a wrap-up); `trace`:
        log a bug's traceback (once per backoff: the case is not tried again before)."""
        kind = kind_of(exc)
        if kind == STALE:
            log.info("case %s: %s skipped: %s", row.id, what, exc)
            return
        if kind == PERMANENT and not patient:
            self.fail(row.id, short(exc))
            return
        if kind == BUG and bug_fails:
            log.error("case %s: unexpected error in %s", row.id, what, exc_info=exc)
            self.fail(row.id, f"internal error during {what}: {short(exc)} (see the log)")
            return
        host = self._host_or_none(row)
        if kind == HOST and host is not None and isinstance(exc, HostError):
            problem = self.health.pause(host, exc)
            if not self._move_elsewhere(row, host, problem):
                self.store.reschedule(row.id, row.state, self.clock() + self.policy.max_seconds)
            return
        if is_unreachable(exc) and host is not None:
            self.health.unreachable(host)
            if self._move_elsewhere(row, host, short(exc)):
                return
        now = self.clock()
        fresh = self.store.get(row.id) or row  # the streak as it is now
        verdict = after_error(self.policy, Streak.of(fresh), exc, now, what, patient=patient)
        metrics.attempt_failed(what)
        if isinstance(verdict, GiveUp):
            metrics.gave_up(what)
            self.fail(row.id, verdict.reason)
            return
        self.store.note_failure(
            row.id,
            row.state,
            verdict.streak.attempts,
            verdict.streak.failing_since,
            verdict.error,
            verdict.next_attempt_at,
            now,
        )
        log.warning(
            "case %s %r: %s failed (attempt %d), next try in %.0f s: %s",
            row.id,
            row.name,
            what,
            verdict.streak.attempts,
            verdict.next_attempt_at - now,
            short(exc),
            exc_info=exc if kind == BUG and trace else None,
        )

    def _host_or_none(self, row: CaseRow) -> Host | None:
        try:
            return self.host_of(row)
        except PermanentError:
            return None

    def _move_elsewhere(self, row: CaseRow, host: Host, why: str) -> bool:
        """A case holding a slot on `host` but not uploaded yet goes back to the queue, to
        take a slot on another host serving its group (cases already uploaded stay)."""
        if self.REQUEUE is None or not self.machine.allowed(self.REQUEUE, row.state):
            return False
        if not [n for n in self.health.usable_for(row.grp) if n != host.name]:
            return False
        return bool(self.step(row, self.REQUEUE, detail=f"host {host.name}: {why}"))

    # -- the lanes (each host's worker threads) ----------------------------------------------
    def _dispatch(self, row: CaseRow, trigger: str, **kwargs) -> None:
        self._dispatch_call(row, self._step_in_worker, row, trigger, kwargs)

    def _dispatch_call(self, row: CaseRow, fn, *args, short: bool = False) -> None:
        """Run `fn(*args)` for the case in its host's lane (its short lane for a short remote
        call; inline without lanes), at most one piece of work per case at a time, and never
        for a row that is out of date."""
        if not self.inflight.claim(row.id):
            return
        if self._still(row) is None:
            self.inflight.release(row.id)
            return
        host = self._host_or_none(row) or self.first_host
        self.inflight.run(host.short_lane if short else host.lane, row.id, fn, args)

    def _dispatch_host(self, host: Host, work: str, fn, *args) -> None:
        """A host's own work (a poll, a probe), in its short lane: one of each at a time; a
        shutdown does not wait for it."""
        if self.inflight.claim((work, host.name)):
            self.inflight.run(host.short_lane, (work, host.name), fn, args, awaited=False)

    def _still(self, row: CaseRow) -> CaseRow | None:
        """The case as the store has it now, if it is still where `row` saw it: a step that
        finished after this tick read its due cases must not be run again on a stale row."""
        fresh = self.store.get(row.id)
        if (
            fresh is None
            or fresh.state != row.state
            or fresh.run != row.run
            or fresh.updated_at != row.updated_at
        ):
            return None
        return fresh

    def _step_in_worker(self, row: CaseRow, trigger: str, kwargs: dict) -> None:
        if self.step(row, trigger, **kwargs):
            fresh = self.store.get(row.id)
            name = (fresh.slot_host or fresh.host) if fresh is not None else None
            if name is not None and name in self.hosts:
                self.health.answered(self.hosts[name])

    def _wrap_up(self, row: CaseRow) -> None:
        try:
            wrapup.wrap_up(self, row)
        except Exception as exc:  # a bug: backed off, logged once per backoff
            self._settle(row, "wrap-up", exc, patient=True)

    # -- the jobs of running cases (caseflow.jobs) --------------------------------------
    def poll(self, host: Host, rows: list[CaseRow]):
        """Ask the host's queue about all its running cases in one call; act on the answers
        (QUIET when there was nothing to act on, caseflow.workers)."""
        return jobs.poll(self, host, rows)

    # -- operator requests (caseflow.operator_requests) ------------------------------
    def apply_requests(self) -> None:
        operator_requests.apply_all(self)

    def apply_request(self, row: CaseRow) -> bool:
        return operator_requests.apply(self, row)
