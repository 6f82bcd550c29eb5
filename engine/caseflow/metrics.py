"""Prometheus metrics, served on the status page's listener at /metrics.

Two kinds. What the store knows (cases per state and group, slots, paused hosts, the
oldest queued case, transitions by trigger, the phases of the runs that ended) is read from
the database at scrape time by `StoreCollector`, so it is right after a restart and costs
nothing between scrapes.
What only happens in the process (SSH commands, errors and connections, upload bytes and
time, poll and tick durations, failed attempts, give-ups) is counted by the one-line calls
below, placed in the engine and the transports; those counters start at 0 with the daemon.

Label values are host, group, state and trigger names from the config and the spec:
never a case name (unbounded, and chosen by whoever names a folder).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from . import __version__, durations
from .backends import LOST_CAUSES
from .errors import HOST_PROBLEM_KINDS, UNREACHABLE
from .store import JobTimes

disable_created_metrics()  # no caseflow_*_created series: the process start time says it
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, resident memory, open fds

SSH_COMMANDS = Counter(
    "caseflow_ssh_commands", "Remote commands run over SSH.", ["host"], registry=REGISTRY
)
SSH_ERRORS = Counter(
    "caseflow_ssh_errors",
    "SSH connection attempts and remote commands or "
    "transfers that failed on the connection (refused, lost, timed out).",
    ["host"],
    registry=REGISTRY,
)
SSH_CONNECTS = Counter(
    "caseflow_ssh_connects",
    "SSH connections opened: the first one and every reconnect.",
    ["host"],
    registry=REGISTRY,
)
UPLOAD_BYTES = Counter(
    "caseflow_upload_bytes",
    "Bytes of case files uploaded (uploads that found a complete copy already there send none).",
    ["host"],
    registry=REGISTRY,
)
UPLOAD_SECONDS = Histogram(
    "caseflow_upload_duration_seconds",
    "Time one case's upload took, from the first command to the verified rename.",
    ["host"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, float("inf")),
    registry=REGISTRY,
)
POLL_SECONDS = Histogram(
    "caseflow_poll_duration_seconds",
    "Time one batched poll of a host's queue took (one remote command for all its running cases).",
    ["host"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf")),
    registry=REGISTRY,
)
TICK_SECONDS = Histogram(
    "caseflow_tick_duration_seconds",
    "Time one tick of the engine's loop took (detection, requests, due steps, polls).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, float("inf")),
    registry=REGISTRY,
)
FAILED_ATTEMPTS = Counter(
    "caseflow_failed_attempts",
    "Steps that failed with a transient error; the case tries again after its backoff.",
    ["step"],
    registry=REGISTRY,
)
RERUNS = Counter(
    "caseflow_reruns",
    "Runs of cases taken away by the infrastructure and run again (retry.infrastructure_reruns), "
    "by host and cause: preempted, node_failed, host_restarted, processes_gone.",
    ["host", "cause"],
    registry=REGISTRY,
)
GIVE_UPS = Counter(
    "caseflow_give_ups",
    "Cases ended in failure because a step kept failing "
    "(retry.give_up_after_seconds or the error's attempt limit).",
    ["step"],
    registry=REGISTRY,
)


# the buckets of caseflow_case_phase_seconds: from a quiet period of seconds to a queue wait of days
PHASE_BUCKETS = (
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
    3 * 86400, float("inf"),
)  # fmt: skip


def _empty_histogram() -> list:
    return [[0] * len(PHASE_BUCKETS), 0.0]


# -- the hooks (one line each where they are called) -----------------------------------------
def ssh_command(host: str) -> None:
    SSH_COMMANDS.labels(host).inc()


def ssh_error(host: str) -> None:
    SSH_ERRORS.labels(host).inc()


def ssh_connect(host: str) -> None:
    SSH_CONNECTS.labels(host).inc()


def uploaded(host: str, size_bytes: int, seconds: float) -> None:
    UPLOAD_BYTES.labels(host).inc(size_bytes)
    UPLOAD_SECONDS.labels(host).observe(seconds)


def poll_timer(host: str):
    """`with metrics.poll_timer(host.name):` around a host's batched status call."""
    return POLL_SECONDS.labels(host).time()


@contextmanager
def tick_timer():
    started = time.perf_counter()
    try:
        yield
    finally:
        TICK_SECONDS.observe(time.perf_counter() - started)


def attempt_failed(step: str) -> None:
    FAILED_ATTEMPTS.labels(step).inc()


def gave_up(step: str) -> None:
    GIVE_UPS.labels(step).inc()


def rerun(host: str, cause: str) -> None:
    RERUNS.labels(host, cause).inc()


def declare(config, spec) -> None:
    """Every configured host's and every step's series exist from the start (at 0), so that
    rates and alerts (`increase(...) > 0`) see the first event."""
    for step in [*spec.triggers, "poll"]:
        FAILED_ATTEMPTS.labels(step)
        GIVE_UPS.labels(step)
    for h in config.hosts:
        if h.transport.kind == "ssh":
            for counter in (SSH_COMMANDS, SSH_ERRORS, SSH_CONNECTS):
                counter.labels(h.name)
        for cause in LOST_CAUSES:
            RERUNS.labels(h.name, cause)
        UPLOAD_BYTES.labels(h.name)
        UPLOAD_SECONDS.labels(h.name)
        POLL_SECONDS.labels(h.name)


# -- read from the store at scrape time -----------------------------------------------------
class StoreCollector:
    """Gauges and counters from the database, read when Prometheus scrapes."""

    def __init__(self, reader, spec, config, engine=None, clock=time.time):
        self.reader = reader
        self.spec = spec
        self.config = config
        self.engine = engine
        self.clock = clock
        self._lock = threading.Lock()
        self._history_seen = 0
        # every move of the spec from the start, at 0 (see declare)
        self._transitions: dict[tuple[str, str], int] = {("detect", spec.initial): 0}
        for t in spec.transitions:
            self._transitions[(t.trigger, t.dest)] = 0
        # (phase, group, state) -> [count per bucket (not cumulative), sum]: every run that
        # ended, read from the history once (a restart reads it all again: nothing is counted
        # twice, nothing is lost)
        self._runs_seen = 0
        self._phases: dict[tuple[str, str, str], list] = {}

    def describe(self):
        return []  # nothing to check at registration; names are fixed below

    def collect(self):
        now = self.clock()
        groups = [g.name for g in self.config.groups]
        yield self._cases(groups)
        yield self._oldest_queued(groups, now)
        yield from self._slots()
        yield from self._hosts(now)
        yield self._transitions_total()
        yield self._phase_seconds(groups)
        info = GaugeMetricFamily(
            "caseflow_build_info", "caseflow's version (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info

    def _cases(self, groups):
        cases = GaugeMetricFamily(
            "caseflow_cases",
            'Cases in each state, per GPU group ("" before a case is validated).',
            labels=["state", "group"],
        )
        counts = {(c.state, c.group or ""): c.cases for c in self.reader.counts()}
        for state in self.spec.state_names:
            for group in ["", *groups]:
                counts.setdefault((state, group), 0)
        order = {s: i for i, s in enumerate(self.spec.state_names)}
        for (state, group), n in sorted(
            counts.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0])
        ):
            cases.add_metric([state, group], n)
        return cases

    def _oldest_queued(self, groups, now):
        oldest = GaugeMetricFamily(
            "caseflow_oldest_queued_case_age_seconds",
            "How long the case that has waited "
            "longest for a slot of the group has been queued (0 when none waits).",
            labels=["group"],
        )
        ages: dict[str, float] = {}
        for state in self.spec.slot_taking_states:  # the spec's: cases waiting for a slot
            for g, t in self.reader.oldest_waiting(state):
                ages[g or ""] = max(ages.get(g or "", 0.0), now - t)
        for group in groups:
            ages.setdefault(group, 0.0)
        for group, age in sorted(ages.items()):
            oldest.add_metric([group], age)
        return oldest

    def _slots(self):
        total = GaugeMetricFamily(
            "caseflow_slots",
            "GPU slots of the group on the host (retired ones still held by a case included).",
            labels=["host", "group"],
        )
        used = GaugeMetricFamily(
            "caseflow_slots_in_use",
            "GPU slots of the group on the host that a case holds.",
            labels=["host", "group"],
        )
        per: dict[tuple[str, str], list[int]] = {}
        for s in self.reader.slots():
            entry = per.setdefault((s.host, s.grp), [0, 0])
            entry[0] += 1
            entry[1] += s.case_id is not None
        for (host, group), (n, busy) in sorted(per.items()):
            total.add_metric([host, group], n)
            used.add_metric([host, group], busy)
        return total, used

    def _hosts(self, now):
        paused = GaugeMetricFamily(
            "caseflow_host_paused",
            "1 while work on the host is paused "
            "(authentication failed, host key unknown or changed).",
            labels=["host"],
        )
        paused_for = GaugeMetricFamily(
            "caseflow_host_paused_seconds",
            "How long work on the host has been paused (0 when it is not).",
            labels=["host"],
        )
        down = GaugeMetricFamily(
            "caseflow_host_unreachable",
            "1 while the host does not "
            "answer (its cases wait; it is probed every "
            "transport.reconnect_min_interval).",
            labels=["host"],
        )
        drained = GaugeMetricFamily(
            "caseflow_host_drained",
            "1 while an operator drained the host (`caseflow host pause`: no new upload or "
            "submit there; its running jobs go on).",
            labels=["host"],
        )
        up = GaugeMetricFamily(
            "caseflow_host_up",
            "1 while the host answers and takes work (not unreachable, not paused).",
            labels=["host"],
        )
        problem = GaugeMetricFamily(
            "caseflow_host_problem",
            "1 for the kind of problem the host has now (unreachable, host_key, auth, login, "
            "queue_down, config, disk_low); 0 for the others.",
            labels=["host", "kind"],
        )
        problem_for = GaugeMetricFamily(
            "caseflow_host_problem_seconds",
            "How long the host has had its problem, of whatever kind (0 when it has none).",
            labels=["host"],
        )
        free = GaugeMetricFamily(
            "caseflow_host_free_bytes",
            "Free space of the file system holding the host's remote root, at the last probe "
            "(every health_seconds).",
            labels=["host"],
        )
        known = {h.name: h for h in self.reader.hosts()}
        for cfg in self.config.hosts:
            row = known.get(cfg.name)
            host = self.engine.hosts.get(cfg.name) if self.engine is not None else None
            kind = row.kind if row is not None and row.problem else None
            since = row.since if row is not None and kind is not None and row.since else None
            lasted = max(0.0, now - since) if since is not None else 0.0
            drained.add_metric([cfg.name], int(bool(row and row.drain)))
            is_paused = bool(row and row.paused)
            paused.add_metric([cfg.name], int(is_paused))
            paused_for.add_metric([cfg.name], lasted if is_paused else 0.0)
            is_down = kind == UNREACHABLE or bool(host is not None and host.down and not is_paused)
            down.add_metric([cfg.name], int(is_down))
            up.add_metric([cfg.name], int(not is_paused and not is_down))
            for k in HOST_PROBLEM_KINDS:
                problem.add_metric([cfg.name, k], int(k == kind))
            problem_for.add_metric([cfg.name], lasted)
            if host is not None and host.free_bytes is not None:
                free.add_metric([cfg.name], host.free_bytes)
        return paused, paused_for, down, drained, up, problem, problem_for, free

    def _phase_seconds(self, groups):
        with self._lock:  # only the runs that ended since the last scrape are read
            self._runs_seen, ended = self.reader.runs_ended_after(
                self._runs_seen, self.spec.terminal_states
            )
            for end, group, history in ended:
                run = durations.runs(self.spec, history)[-1]
                job = JobTimes(end.job_started, end.job_ended, end.job_times_source)
                for phase, seconds in durations.phases(self.spec, run, job, end.at).items():
                    if seconds is not None:
                        self._observe((phase, group or "", end.dst), seconds)
            for phase in durations.KEYS:  # every configured group's series from the start
                for group in groups:
                    for state in self.spec.terminal_states:
                        self._phases.setdefault((phase, group, state), _empty_histogram())
            found = {k: (list(v[0]), v[1]) for k, v in self._phases.items()}
        family = HistogramMetricFamily(
            "caseflow_case_phase_seconds",
            "How long the runs of cases that ended spent in each phase (quiet, slot_wait, "
            "upload, queue_wait, run, results) and in all (total: the time to result), per "
            "group and the state the run ended in (from the store's history: kept across "
            "restarts; docs/status-page.md says where each phase begins and ends).",
            labels=["phase", "group", "state"],
        )
        order = {p: i for i, p in enumerate(durations.KEYS)}
        for (phase, group, state), (counts, total) in sorted(
            found.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:])
        ):
            cumulative, buckets = 0, []
            for bound, n in zip(PHASE_BUCKETS, counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            family.add_metric([phase, group, state], buckets, total)
        return family

    def _observe(self, key: tuple[str, str, str], seconds: float) -> None:
        entry = self._phases.setdefault(key, _empty_histogram())
        entry[0][next(i for i, b in enumerate(PHASE_BUCKETS) if seconds <= b)] += 1
        entry[1] += seconds

    def _transitions_total(self):
        with self._lock:  # only what was added since the last scrape is read
            self._history_seen, rows = self.reader.transitions_after(self._history_seen)
            for trigger, dest, n in rows:
                self._transitions[(trigger, dest)] = self._transitions.get((trigger, dest), 0) + n
            counts = dict(self._transitions)
        family = CounterMetricFamily(
            "caseflow_transitions",
            "Transitions of cases, by trigger "
            "and the state they led to (from the store's history: "
            "kept across restarts).",
            labels=["trigger", "to"],
        )
        for (trigger, dest), n in sorted(counts.items()):
            family.add_metric([trigger, dest], n)
        return family
