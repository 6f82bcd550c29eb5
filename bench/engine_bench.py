"""Engine overhead: a daemon whose store holds 10,000 cases, 1,000 of them active.

Pure engine: the real `Daemon` (watcher, tick loop, worker pool, SQLite store) with the
local transport, and an in-process queue backend that answers at once, so what is
measured is caseflow's own cost, not a remote side. It runs in a child process, so its
memory is its own.

1. The store is built through the store's own transitions (one transaction each, as the
   engine commits them): N - A terminal cases, A/2 running (holding every slot), A/2
   queued behind them. The rate is the store's persisted transitions per second; the
   alternative is SQLite itself on the same disk and settings (WAL, synchronous=NORMAL):
   one single-row INSERT per transaction.
2. Steady state: the daemon ticks (every tick_seconds, polling every poll_seconds); the
   CPU time of the tick thread per tick (target <= 20 ms), with and without a poll.
3. Burst: every running job ends at once. The engine records the ends, fetches results
   (local), completes and wraps up those cases, and the queued ones take the freed slots,
   upload (local) and are submitted. Transitions persisted per second, end to end.
4. The daemon's resident memory (target <= 120 MB), next to a bare Python interpreter's.
5. Waiting cases: a store with 20,000 queued cases and every slot held (100 running
   cases): CPU per tick of the tick thread (target <= 20 ms; they cost 330-440 ms when every
   waiting case was read at every tick).

    python bench/engine_bench.py [--quick] [--cases 10000] [--active 1000] [--queued 20000]
                                 [--profile] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (add_case, machine, median, ratio, rss_mib, section,  # noqa: E402
                      workdir, write_config)

from caseflow.backends import RUNNING, SUCCESS, JobStatus, QueueBackend  # noqa: E402


class InstantQueue(QueueBackend):
    """A queue that answers at once: every job runs until `finish_all()`."""

    def __init__(self):
        self.ended: set[int] = set()
        self.finish_from = None
        self.next_id = 100_000
        self.status_calls = 0
        self.lock = threading.Lock()

    def submit(self, job) -> str:
        with self.lock:
            self.next_id += 1
            return str(self.next_id)

    def status(self, jobs):
        self.status_calls += 1
        out = {}
        for j in jobs:
            done = self.finish_from is not None and int(j.task_id) <= self.finish_from
            out[j.case_id] = JobStatus(SUCCESS, "exit code 0", 0) if done else \
                JobStatus(RUNNING, "running")
        return out

    def finish_all(self) -> None:
        """Every job submitted so far ends."""
        with self.lock:
            self.finish_from = self.next_id

    def cancel(self, job) -> None:
        pass

    def job_log(self, job) -> str:
        return "job output\n"


def measure_polls(engine) -> list[float]:
    """The CPU time of each poll's own work (asking the queue, acting on its answers): in
    the host's lane, so not in the tick thread's figure (it was, before polls left it)."""
    spent: list[float] = []
    plain = engine.poll

    def measured(host, rows):
        c0 = time.thread_time()
        try:
            return plain(host, rows)
        finally:
            spent.append(time.thread_time() - c0)
    engine.poll = measured
    return spent


def sqlite_rate(path: Path, n: int) -> float:
    """Single-row INSERT transactions per second: SQLite's own rate, as the store sets it up."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b REAL)")
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (a, b) VALUES (?, ?)", ("x" * 40, i))
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    conn.close()
    return rate


def bare_python_rss() -> float:
    out = subprocess.run([sys.executable, "-c", "import pathlib; print(pathlib.Path("
                          "'/proc/self/status').read_text())"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(work: Path, cases: int, active: int, steady_s: float, profile: bool,
          waiting_cases: int) -> dict:
    from caseflow.daemon import Daemon
    from caseflow.core.engine import Engine

    running, queued = active // 2, active - active // 2
    inbox, remote = work / "inbox", work / "remote"
    inbox.mkdir()
    remote.mkdir()
    config = write_config(work / "caseflow.yaml", {
        "inbox": "inbox", "database": "caseflow.db", "tick_seconds": 0.25, "poll_seconds": 1,
        "stability": {"quiet_seconds": 5, "rescan_seconds": 30},
        "groups": {"gpu_a": {"slots": running}},
        "transport": {"kind": "local", "root": "remote"},
        "backend": {"kind": "direct", "command": "true"},
        "log": {"level": "WARNING"}})
    queue = InstantQueue()
    engine = Engine(config, backend=queue)
    engine.start(workers=False)
    host = engine.first_host.name
    store = engine.store

    # 1. the store, built through its own transitions
    now = time.time()
    t0 = time.perf_counter()
    for i in range(cases - active):
        add_case(store, f"done{i:05d}", str(work / "archive" / f"done{i:05d}"), "success", now,
                 group="gpu_a", host=host)
    built = time.perf_counter() - t0
    history_built = store.connection().execute("SELECT COUNT(*) FROM history").fetchone()[0]
    for i in range(running):
        name = f"run{i:04d}"
        folder = remote / name
        (folder / ".caseflow").mkdir(parents=True)
        (folder / ".caseflow" / "uploaded").write_bytes(b"")
        (inbox / name).mkdir()
        (inbox / name / "data.txt").write_text("data")
        add_case(store, name, str(inbox / name), "running", now, group="gpu_a", host=host,
                 remote_path=str(folder), task_id=queue.submit(None))
        (folder / "result.txt").write_text("result")
    for i in range(queued):
        name = f"wait{i:04d}"
        (inbox / name).mkdir()
        (inbox / name / "data.txt").write_text("data")
        add_case(store, name, str(inbox / name), "queued", now, group="gpu_a", host=host)
    engine.shutdown()
    store.close()
    db_mib = (work / "caseflow.db").stat().st_size / 2 ** 20

    # 2. the daemon, steady
    daemon = Daemon(config, engine=Engine(config, backend=queue))
    eng = daemon.engine
    ticks: list[dict] = []
    plain_tick = eng.tick
    prof = None
    if profile:
        import cProfile
        prof = cProfile.Profile()

    def measured_tick():
        polled = eng.first_host.last_poll  # a tick that starts a poll sets it
        w0, c0 = time.perf_counter(), time.thread_time()
        if prof is not None:
            prof.enable()
        try:
            return plain_tick()
        finally:
            if prof is not None:
                prof.disable()
            ticks.append({"wall": time.perf_counter() - w0, "cpu": time.thread_time() - c0,
                          "polled": eng.first_host.last_poll != polled})
    eng.tick = measured_tick
    poll_cpu = measure_polls(eng)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    daemon.ready.wait(60)
    time.sleep(steady_s)
    steady = list(ticks[1:])  # the first tick also reconciles and rescans the inbox
    with_poll = [t["cpu"] for t in steady if t["polled"]]
    without = [t["cpu"] for t in steady if not t["polled"]]
    profile_top = []
    if prof is not None:
        import io
        import pstats
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(25)
        profile_top = text.getvalue().splitlines()
        prof = None

    # 3. the burst: every running job ends
    reader = eng.store
    h0 = reader.connection().execute("SELECT COUNT(*) FROM history").fetchone()[0]
    t0 = time.perf_counter()
    queue.finish_all()
    eng.wake()
    deadline = time.monotonic() + 600
    while True:
        counts = dict(reader.connection().execute(
            "SELECT state, COUNT(*) FROM cases WHERE name NOT LIKE 'done%' GROUP BY state"))
        pending_wrapups = reader.connection().execute(
            "SELECT COUNT(*) FROM cases WHERE wrapup = 1").fetchone()[0]
        if counts.get("success") == running and counts.get("running") == queued and \
                not pending_wrapups:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the burst did not settle: {counts}")
        time.sleep(0.05)
    burst = time.perf_counter() - t0
    h1 = reader.connection().execute("SELECT COUNT(*) FROM history").fetchone()[0]
    rss, peak = rss_mib()
    daemon.request_stop()
    thread.join(60)
    raw = sqlite_rate(work / "raw.db", 3000)
    return {
        "cases": cases, "active": active, "running": running, "queued": queued,
        "database_mib": round(db_mib, 1),
        "store_build": {"transitions": history_built, "seconds": round(built, 2),
                        "transitions_per_s": round(history_built / built)},
        "sqlite_insert_tx_per_s": round(raw),
        "ticks": len(steady),
        "tick_cpu_ms": {
            "with_poll": {"median": round(median(with_poll) * 1000, 1) if with_poll else None,
                          "max": round(max(with_poll) * 1000, 1) if with_poll else None,
                          "n": len(with_poll)},
            "without_poll": {"median": round(median(without) * 1000, 1) if without else None,
                             "max": round(max(without) * 1000, 1) if without else None,
                             "n": len(without)}},
        "poll_work_cpu_ms": {"median": round(median(poll_cpu) * 1000, 1) if poll_cpu else None,
                             "n": len(poll_cpu)},
        "burst": {"transitions": h1 - h0, "seconds": round(burst, 2),
                  "transitions_per_s": round((h1 - h0) / burst)},
        "rss_mib": round(rss, 1), "peak_rss_mib": round(peak, 1),
        "profile": profile_top,
        "waiting": waiting(work / "waiting", waiting_cases, steady_s),
    }


def waiting(work: Path, queued: int, steady_s: float) -> dict:
    """Part 5: `queued` cases wait for a slot and none is free; the daemon ticks."""
    from caseflow.daemon import Daemon
    from caseflow.core.engine import Engine

    held = 100
    work.mkdir()
    (work / "inbox").mkdir()
    (work / "remote").mkdir()
    config = write_config(work / "caseflow.yaml", {
        "inbox": "inbox", "database": "caseflow.db", "tick_seconds": 0.25, "poll_seconds": 1,
        "stability": {"quiet_seconds": 5, "rescan_seconds": 30},
        "groups": {"gpu_a": {"slots": held}},
        "transport": {"kind": "local", "root": "remote"},
        "backend": {"kind": "direct", "command": "true"},
        "log": {"level": "WARNING"}})
    queue = InstantQueue()
    engine = Engine(config, backend=queue)
    engine.start(workers=False)
    host, store, now = engine.first_host.name, engine.store, time.time()
    for i in range(held):
        add_case(store, f"run{i:04d}", str(work / "inbox" / f"run{i:04d}"), "running", now,
                 group="gpu_a", host=host, task_id=queue.submit(None))
    for i in range(queued):
        add_case(store, f"wait{i:05d}", str(work / "inbox" / f"wait{i:05d}"), "queued", now,
                 group="gpu_a", host=host)
    engine.shutdown()
    store.close()
    daemon = Daemon(config, engine=Engine(config, backend=queue))
    eng = daemon.engine
    ticks: list[dict] = []
    plain_tick = eng.tick

    def measured_tick():
        polled = eng.first_host.last_poll  # a tick that starts a poll sets it
        c0 = time.thread_time()
        try:
            return plain_tick()
        finally:
            ticks.append({"cpu": time.thread_time() - c0,
                          "polled": eng.first_host.last_poll != polled})
    eng.tick = measured_tick
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    daemon.ready.wait(60)
    time.sleep(steady_s)
    daemon.request_stop()
    thread.join(60)
    steady = ticks[1:]  # the first tick also rescans the inbox
    without = [t["cpu"] for t in steady if not t["polled"]]
    with_poll = [t["cpu"] for t in steady if t["polled"]]
    return {"queued": queued, "held_slots": held, "ticks": len(steady),
            "tick_cpu_ms": {
                "without_poll": {"median": round(median(without) * 1000, 1) if without else None,
                                 "max": round(max(without) * 1000, 1) if without else None,
                                 "n": len(without)},
                "with_poll": {"median": round(median(with_poll) * 1000, 1) if with_poll else None,
                              "max": round(max(with_poll) * 1000, 1) if with_poll else None,
                              "n": len(with_poll)}}}


def run(quick: bool = False, cases: int | None = None, active: int | None = None,
        profile: bool = False, queued: int | None = None) -> dict:
    cases = cases or (1000 if quick else 10_000)
    active = active or (100 if quick else 1000)
    queued = queued or (2000 if quick else 20_000)
    section(f"engine: {cases:,} cases in the store, {active:,} active")
    with workdir("engine") as work:
        proc = subprocess.run([sys.executable, __file__, "--child", str(work), "--cases",
                               str(cases), "--active", str(active), "--queued", str(queued),
                               "--steady",
                               str(2 if quick else 10)] + (["--profile"] if profile else []),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"the engine benchmark failed:\n{proc.stderr[-3000:]}")
        r = json.loads((work / "result.json").read_text())
    r["bare_python_rss_mib"] = round(bare_python_rss(), 1)
    r["store_vs_sqlite"] = ratio(r["store_build"]["transitions_per_s"],
                                 r["sqlite_insert_tx_per_s"])
    r["burst_vs_sqlite"] = ratio(r["burst"]["transitions_per_s"], r["sqlite_insert_tx_per_s"])
    t = r["tick_cpu_ms"]
    print(f"store: {r['store_build']['transitions_per_s']:,} transitions/s while building "
          f"({r['store_vs_sqlite']}x SQLite's {r['sqlite_insert_tx_per_s']:,} single-row "
          f"transactions/s); database {r['database_mib']} MiB")
    print(f"tick CPU with {active} active: {t['with_poll']['median']} ms with a poll (max "
          f"{t['with_poll']['max']}), {t['without_poll']['median']} ms without (max "
          f"{t['without_poll']['max']}), over {r['ticks']} ticks; a poll's own work "
          f"{r['poll_work_cpu_ms']['median']} ms (in the host's lane)")
    print(f"burst: {r['burst']['transitions']} transitions in {r['burst']['seconds']} s = "
          f"{r['burst']['transitions_per_s']:,}/s end to end (results fetched, wrap-ups, "
          f"uploads, submits)")
    print(f"daemon RSS {r['rss_mib']} MiB (peak {r['peak_rss_mib']}); a bare Python "
          f"interpreter: {r['bare_python_rss_mib']} MiB")
    w = r["waiting"]["tick_cpu_ms"]
    print(f"waiting: {queued:,} queued cases, no free slot: {w['without_poll']['median']} ms CPU "
          f"per tick (max {w['without_poll']['max']}) without a poll, "
          f"{w['with_poll']['median']} ms with one, over {r['waiting']['ticks']} ticks")
    for line in r.get("profile") or []:
        print(line)
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cases", type=int)
    p.add_argument("--active", type=int)
    p.add_argument("--queued", type=int, help="waiting cases for part 5 (default 20000)")
    p.add_argument("--profile", action="store_true", help="print the steady ticks' profile")
    p.add_argument("--json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--steady", type=float, default=10, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        work = Path(args.child)
        r = child(work, args.cases, args.active, args.steady, args.profile, args.queued)
        (work / "result.json").write_text(json.dumps(r))
        return 0
    result = {"machine": machine(), "engine": run(args.quick, args.cases, args.active,
                                                 args.profile, args.queued)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
