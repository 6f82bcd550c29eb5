"""The engine: one tick advances every case that is due by one step.

Which step a state takes comes from the spec (`step:`); whether a move is legal
is decided by the machine built from the spec. The engine only schedules:
detection of new folders, operator requests, due steps (long ones in the
worker pool), batched polling, and persisted backoff for transient errors.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from . import casefolder, metrics, wrapup
from .backends import FAILURE, NOT_FOUND, RUNNING, SUCCESS
from .case_model import Case, job_ref
from .errors import HostError, PermanentError, StaleCase, TransientError
from .machine import CaseMachine, MachineError
from .spec import POLL, MachineSpec, load_spec
from .store import CaseRow, Store
from .hosts import Host, is_unreachable
from .watcher import is_hidden
from .workers import WorkerPool

log = logging.getLogger("caseflow.engine")

REQUESTS = ("cancel", "retry")
REQUEUE = "requeue"  # a case not uploaded yet leaves a host that cannot be reached
FINISH = {SUCCESS: "complete", FAILURE: "fail", NOT_FOUND: "lose"}  # how a job's end ends a case


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


class Engine:
    def __init__(self, config, spec: MachineSpec | None = None, store: Store | None = None,
                 transport=None, backend=None, clock=time.time, watcher=None):
        self.config = config
        self.spec = spec or load_spec()
        self.store = store or Store(config.database)
        self.clock = clock
        self.watcher = watcher
        self.machine = CaseMachine(self.spec)
        # the hosts, in config order; `transport`/`backend` given here are the first host's
        self.hosts: dict[str, Host] = {}
        for i, h in enumerate(config.hosts):
            self.hosts[h.name] = Host(h, transport if i == 0 else None,
                                      backend if i == 0 else None)
        self.pool: WorkerPool | None = None
        self._inflight: set[int] = set()
        self._inflight_lock = threading.Lock()
        self._seen: set[tuple[str, str | None]] = set()
        self._next_rescan = 0.0
        self.wake_event = threading.Event()
        self._tick_started = float("-inf")
        self.instance = ""
        self._steps = {s.name: s for s in self.spec.states if s.step}
        self._step_states = [n for n, st in self._steps.items() if st.step != POLL]
        self._poll_states = [n for n, st in self._steps.items() if st.step == POLL]

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

    def host_of(self, row: CaseRow) -> Host:
        """The host a case's slot (or upload) belongs to."""
        name = row.slot_host or row.host
        if name is None:
            return self.first_host
        host = self.hosts.get(name)
        if host is None:
            raise PermanentError(f"host {name!r} is no longer configured; configured hosts: "
                                 + ", ".join(self.hosts))
        return host

    # -- life cycle --------------------------------------------------------------------
    def start(self, workers: bool = True) -> None:
        """Migrate the store, sync the slot pool with the config, reclaim leaked slots."""
        self.store.migrate()
        self.instance = self.store.instance_id()
        for name, problem, _ in self.store.host_problems():
            if name in self.hosts:
                self.hosts[name].problem = problem
        for name, notice in self.store.host_notices():
            if name in self.hosts:
                self.hosts[name].notice = notice
        for line in self.store.sync_slots(self.config.hosts):
            log.info("%s", line)
        freed = self.store.reconcile_slots(self.spec.slot_states)
        for slot_id, grp, idx, case_id, state in freed:
            log.warning("freed slot %s[%s] held by case %s (%s)", grp, idx, case_id, state)
        self.slots_reclaimed = len(freed)  # for the daemon's start-up summary
        self._seen = {(p, i) for p, i, _ in self.store.folders()}
        if workers:
            self.pool = WorkerPool(self.config.workers)

    def shutdown(self) -> bool:
        done = True
        if self.pool is not None:
            done = self.pool.shutdown(self.config.shutdown_grace_seconds)
            if not done:
                log.warning("abandoned %d unfinished step(s); they run again at the next start",
                            len(self._inflight))
            self.pool = None
        for host in self.hosts.values():
            host.close()
        return done

    def forget_folder(self, path: str, inode: str | None) -> None:
        """A case folder left the inbox (archived): a folder brought back there is a new case."""
        self._seen.discard((path, inode))

    def last_activity(self, name: str) -> float | None:
        return self.watcher.last_activity(name) if self.watcher else None

    def wake(self) -> None:
        self.wake_event.set()

    # -- the tick ----------------------------------------------------------------------
    def tick(self) -> None:
        now = self._tick_started = self.clock()
        self.detect(now)
        self.apply_requests()
        # running cases are read only when a host's poll is due (or their job has ended):
        # with a thousand of them running, most ticks need not load them at all
        poll_due = any(now - h.last_poll >= self.config.poll_seconds for h in self.hosts.values())
        due = self.store.due_cases(now, self._step_states)
        due += self.store.due_cases(now, self._poll_states, ended_only=not poll_due)
        polled: dict[str, list[CaseRow]] = {}
        blocked: set[tuple] = set()  # (state, group) whose condition said "no" this tick
        for row in due:
            state = self._steps[row.state]
            if state.step == POLL and row.job_outcome:
                self._finish(row)
            elif state.step == POLL:
                try:
                    polled.setdefault(self.host_of(row).name, []).append(row)
                except PermanentError as exc:
                    self.fail(row.id, _short(exc))
            elif state.worker and self.pool is not None:
                self._dispatch(row, state.step)
            elif not self._is_inflight(row.id) and (row.state, row.grp) not in blocked:
                if self.step(row, state.step) is None:
                    # e.g. no free slot of the group: the younger cases behind it wait too
                    blocked.add((row.state, row.grp))
        for name, rows in polled.items():  # one status command per host
            host = self.hosts[name]
            if now - host.last_poll >= self.config.poll_seconds:
                host.last_poll = now
                self.poll(host, rows)
        for row in self.store.wrapups_due(now):
            self._dispatch_call(row, wrapup.wrap_up, self, row)
        for host in self.hosts.values():
            if host.down and now >= host.next_probe and not host.probing:
                self._probe(host, now)

    def next_wakeup(self) -> float:
        """Seconds until something is due (at most one tick).

        Cases already due were just tried: they are blocked (no free slot) or in
        the worker pool. Either way a tick's wait is right for them; a freed slot
        or a finished step wakes the loop early.
        """
        now = self.clock()
        wait = self.config.tick_seconds
        states = [s for s, st in self._steps.items() if st.step != POLL]
        for nxt in (self.store.next_due(states, after=self._tick_started),
                    self.store.next_wrapup(after=self._tick_started)):
            if nxt is not None:
                wait = min(wait, nxt - now)
        if self.store.next_due([s for s, st in self._steps.items() if st.step == POLL]) is not None:
            last = min(h.last_poll for h in self.hosts.values())
            wait = min(wait, last + self.config.poll_seconds - now)
        return max(0.02, wait)

    # -- detection ---------------------------------------------------------------------
    def detect(self, now: float) -> list[int]:
        """Turn new inbox folders into `detected` cases; nudge cases whose folder went away."""
        appeared, gone = self.watcher.drain() if self.watcher else (set(), set())
        if now >= self._next_rescan:
            self._next_rescan = now + self.config.rescan_seconds
            try:
                appeared |= {e.name for e in os.scandir(self.config.inbox)}
            except OSError as exc:
                log.error("cannot list the inbox %s: %s", self.config.inbox, exc)
        created = []
        for name in sorted(appeared):
            path = self.config.inbox / name
            if is_hidden(name) or path.is_symlink() or not path.is_dir():
                continue
            key = (str(path), casefolder.inode_of(path))
            if key in self._seen or key[1] is None:
                continue
            initial = self.spec.initial
            case_id = self.store.create_case(name, str(path), key[1], initial, now,
                                             now + self.config.quiet_seconds)
            self._seen.add(key)
            created.append(case_id)
            log.info("case %s %r: detected in the inbox", case_id, name,
                     extra={"case_id": case_id, "case_name": name, "to_state": initial,
                            "trigger": "detect"})
        for name in gone:
            path = str(self.config.inbox / name)
            for row in self.store.cases([self.spec.initial]):
                if row.local_path == path:
                    self.store.reschedule(row.id, row.state, now)
        return created

    # -- one step of one case ------------------------------------------------------------
    def step(self, row: CaseRow, trigger: str, **kwargs) -> bool | None:
        """Fire `trigger` for the case; handle what its callbacks raise.

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
            return False
        except PermanentError as exc:
            self.fail(row.id, _short(exc))
        except TransientError as exc:
            self._transient(row, trigger, exc)
        except HostError as exc:
            self._host_problem(self.host_of(row), [row], exc)
        except StaleCase as exc:
            log.info("case %s: %s skipped: %s", row.id, trigger, exc)
        except MachineError as exc:
            log.warning("case %s: %s is not allowed now: %s", row.id, trigger, exc)
        except Exception as exc:  # a bug: make it visible on the case, not a silent loop
            log.exception("case %s: unexpected error in %s", row.id, trigger)
            self.fail(row.id, f"internal error during {trigger}: {_short(exc)} (see the log)")
        return False

    def fail(self, case_id: int, reason: str) -> bool:
        row = self.store.get(case_id)
        if row is None or row.state not in self.spec.sources_of("fail"):
            return False
        case = Case(row, self)
        try:
            with self.machine.bound(case):
                return bool(case.trigger("fail", reason=reason))
        except StaleCase:
            return False

    def _host_problem(self, host: Host, rows: list[CaseRow], exc: HostError) -> None:
        """Pause work on the host: its cases wait (they do not fail) and the problem is shown;
        cases not uploaded yet go to another host serving their group, if there is one."""
        now = self.clock()
        message = _short(exc)
        host.avoid_until = now + self.config.retry.max_seconds
        # probed again after the longest backoff, or sooner when the error says so (a master
        # connection a person opens: checking for it costs nothing on the host)
        host.down = True
        host.next_probe = now + getattr(exc, "probe_seconds", self.config.retry.max_seconds)
        if message != host.problem:
            log.error("host %s: work paused: %s", host.name, message)
            host.problem = message
            self.store.set_host_problem(host.name, message, now)
            wrapup.host_paused(self, host.name, message)
        for row in rows:
            if not self._move_elsewhere(row, host, message):
                self.store.reschedule(row.id, row.state, now + self.config.retry.max_seconds)

    def _host_ok(self, host: Host) -> None:
        host.avoid_until = float("-inf")
        if host.problem is not None:
            log.info("host %s: reachable again; work resumes", host.name)
            host.problem = None
            self.store.set_host_problem(host.name, None, self.clock())
        if host.down:
            host.down = False
            woken = self.store.wake_host(host.name, self.spec.slot_states, self.clock())
            log.info("host %s answers again; %d waiting case(s) go on now", host.name, woken)
            self.wake()

    def _host_down(self, host: Host, now: float) -> None:
        """The host could not be reached: no new cases for a while, and a cheap probe every
        reconnect interval, so its cases go on as soon as it answers (not after the rest of
        their backoff)."""
        host.avoid_until = now + self.config.retry.max_seconds
        if not host.down:
            host.down = True
            host.next_probe = now + self._probe_interval(host)

    def _probe_interval(self, host: Host) -> float:
        return max(1.0, getattr(host.cfg.transport, "reconnect_min_interval", 5.0))

    def _probe(self, host: Host, now: float) -> None:
        host.probing = True
        host.next_probe = now + self._probe_interval(host)

        def probe():
            try:
                host.transport.run(["true"], timeout=30)
                host.backend.probe()  # and its queue answers (e.g. pueue's daemon runs)
            except HostError as exc:
                self._host_problem(host, [], exc)
            except (TransientError, PermanentError) as exc:
                log.debug("host %s: still not answering: %s", host.name, exc)
            else:
                self._host_ok(host)
            finally:
                host.probing = False
        if self.pool is None:
            probe()
        else:
            try:
                self.pool.submit(probe)
            except RuntimeError:
                host.probing = False

    def _note(self, host: Host, notice: str | None) -> None:
        if notice != host.notice:
            host.notice = notice
            self.store.set_host_notice(host.name, notice, self.clock())

    def _move_elsewhere(self, row: CaseRow, host: Host, why: str) -> bool:
        """A case holding a slot on `host` but not uploaded yet goes back to the queue, to
        take a slot on another host serving its group (cases already uploaded stay)."""
        if row.state not in self.spec.sources_of(REQUEUE):
            return False
        now = self.clock()
        others = [h for h in self.hosts.values()
                  if h is not host and h.serves(row.grp) and h.takes_new_cases(now)]
        if not others:
            return False
        return bool(self.step(row, REQUEUE, detail=f"host {host.name}: {why}"))

    def _transient(self, row: CaseRow, trigger: str, exc: Exception) -> None:
        now = self.clock()
        if is_unreachable(exc):
            try:
                host = self.host_of(row)
            except PermanentError:
                host = None
            if host is not None:
                self._host_down(host, now)
                if self._move_elsewhere(row, host, _short(exc)):
                    return
        delay = self.config.retry.delay(row.attempts + 1)
        updated = self.store.note_transient(row.id, row.state, f"{trigger}: {_short(exc)}", now,
                                            now + delay)
        metrics.attempt_failed(trigger)
        limit = getattr(exc, "max_attempts", None)
        if limit and updated and updated.attempts >= limit:
            metrics.gave_up(trigger)
            self.fail(row.id, f"{_short(exc)} (after {updated.attempts} attempts)")
            return
        log.warning("case %s %r: %s failed (attempt %d), next try in %.0f s: %s", row.id,
                    row.name, trigger, row.attempts + 1, delay, _short(exc))
        if updated and updated.failing_since is not None and \
                now - updated.failing_since >= self.config.retry.give_up_after_seconds:
            metrics.gave_up(trigger)
            self.fail(row.id, f"gave up after {updated.attempts} attempts over "
                              f"{now - updated.failing_since:.0f} s; last error: {_short(exc)}")

    # -- the worker pool -----------------------------------------------------------------
    def _is_inflight(self, case_id: int) -> bool:
        with self._inflight_lock:
            return case_id in self._inflight

    def _dispatch(self, row: CaseRow, trigger: str, **kwargs) -> None:
        self._dispatch_call(row, self._step_in_worker, row, trigger, kwargs)

    def _still(self, row: CaseRow) -> CaseRow | None:
        """The case as the store has it now, if it is still where `row` saw it: a step that
        finished after this tick read its due cases must not be run again on a stale row."""
        fresh = self.store.get(row.id)
        if fresh is None or fresh.state != row.state or fresh.run != row.run or \
                fresh.updated_at != row.updated_at:
            return None
        return fresh

    def _step_in_worker(self, row: CaseRow, trigger: str, kwargs: dict) -> None:
        if self.step(row, trigger, **kwargs):
            fresh = self.store.get(row.id)
            if fresh is not None and (fresh.slot_host or fresh.host) in self.hosts:
                self._host_ok(self.hosts[fresh.slot_host or fresh.host])

    def _dispatch_call(self, row: CaseRow, fn, *args) -> None:
        """Run `fn(*args)` for the case in the worker pool (inline without one), at most
        one piece of work per case at a time, and never for a row that is out of date."""
        with self._inflight_lock:
            if row.id in self._inflight:
                return
            self._inflight.add(row.id)
        if self._still(row) is None:
            with self._inflight_lock:
                self._inflight.discard(row.id)
            return
        if self.pool is None:
            self._run_in_worker(fn, row.id, args)
            return
        try:
            self.pool.submit(self._run_in_worker, fn, row.id, args)
        except RuntimeError:
            with self._inflight_lock:
                self._inflight.discard(row.id)

    def _run_in_worker(self, fn, case_id: int, args: tuple) -> None:
        try:
            fn(*args)
        except Exception:  # a bug; the case stays where it is and is tried again
            log.exception("case %s: unexpected error in %s", case_id, fn.__name__)
        finally:
            with self._inflight_lock:
                self._inflight.discard(case_id)
            self.wake()

    def idle(self) -> bool:
        """No step is in flight in the worker pool."""
        with self._inflight_lock:
            return not self._inflight

    # -- polling -------------------------------------------------------------------------
    def poll(self, host: Host, rows: list[CaseRow]) -> None:
        """Ask the host's queue about all its running cases in one call; act on the answers."""
        rows = [r for r in rows if not self._is_inflight(r.id)]
        if not rows:
            return
        try:
            with metrics.poll_timer(host.name):
                answers = host.backend.status([job_ref(r, self.instance) for r in rows])
        except TransientError as exc:
            for row in rows:
                self._transient(row, "poll", exc)
            return
        except HostError as exc:
            self._host_problem(host, rows, exc)
            return
        except PermanentError as exc:
            for row in rows:
                self.fail(row.id, f"the queue's status could not be read: {_short(exc)}")
            return
        self._host_ok(host)
        self._note(host, host.backend.notice())
        now = self.clock()
        for row in rows:
            status = answers.get(row.id)
            if status is None:
                continue
            if status.outcome == RUNNING:
                if status.detail != row.queue_status:
                    self.store.set_queue_status(row.id, row.state, status.detail)
                continue
            # remembered first, so that fetching the results survives a restart
            self.store.record_job_end(row.id, row.state, status.outcome, status.detail,
                                      status.exit_code, now)
            ended = self.store.get(row.id)
            if ended is not None and ended.job_outcome:
                self._finish(ended)

    def _finish(self, row: CaseRow) -> None:
        """The job of a running case ended: fetch its results, then end the case."""
        trigger = FINISH[row.job_outcome]
        key = "detail" if trigger == "complete" else "reason"
        self._dispatch(row, trigger, job_ended=True, **{key: row.job_detail})

    # -- operator requests ---------------------------------------------------------------
    def apply_requests(self) -> None:
        for row in self.store.requested():
            if self._is_inflight(row.id):
                continue  # after the step in flight has finished
            self.apply_request(row)

    def apply_request(self, row: CaseRow) -> bool:
        trigger = row.request
        if trigger not in REQUESTS or not self.machine.allowed(trigger, row.state):
            log.warning("case %s %r: %s request dropped: not possible in state %s", row.id,
                        row.name, trigger, row.state)
            self.store.set_request(row.id, None)
            return False
        return self.step(row, trigger, requested=True)
