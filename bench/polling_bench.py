"""Polling: what one tick costs with N running cases on one host (direct runner over SSH).

The store holds N cases in `running` (taken there by the store's own transitions), each
with a case folder on the host whose `.caseflow/pid` names a live process of its own that
looks like a job (it works in the case folder, its command line carries the job marker), so
every case is really checked (pid alive, that it is the job) and answers `running`. The engine's tick is then timed: the SSH connections it opens and the remote
commands it runs (counted by the transport), its wall time and the CPU time of the tick's
thread, and the poll within it (the backend's status call: the command, the host's status
script, reading its answer). The alternative, measured on the same cases and sshd: the naive script's way, one
`ssh host status` (a new OpenSSH connection) per case per poll, timed over --naive cases
and reported per case and for all N.

    python bench/polling_bench.py [--quick] [-n 1000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (add_case, machine, median, ratio, section, ssh_options,  # noqa: E402
                      sshd, workdir, write_config)

from caseflow.core.engine import Engine  # noqa: E402
from sshd import transport_settings  # noqa: E402

# what the naive script asks per case (the direct runner's bookkeeping, read by hand)
NAIVE_STATUS = 'cat "$1/.caseflow/exit_code" 2>/dev/null || echo running'


def run(quick: bool = False, n: int | None = None, naive_n: int | None = None,
        ticks: int | None = None) -> dict:
    n = n or (100 if quick else 1000)
    naive_n = min(n, naive_n or (10 if quick else 100))
    ticks = ticks or (3 if quick else 10)
    section(f"polling: {n} running cases on one host")
    with workdir("polling") as work, sshd(work) as server:
        remote = work / "remote"
        remote.mkdir()
        (work / "inbox").mkdir()
        jobs: list[subprocess.Popen] = []
        try:
            config = write_config(work / "caseflow.yaml", {
                "inbox": "inbox", "database": "caseflow.db", "poll_seconds": 1,
                "groups": {"gpu_a": {"slots": n}},
                "transport": transport_settings(server, remote),
                "backend": {"kind": "direct", "command": "true"}})
            engine = Engine(config)
            engine.start(workers=False)
            host = engine.first_host
            now = time.time()
            for i in range(n):
                folder = remote / f"{i + 1}-case{i}"
                (folder / ".caseflow" / "launched").mkdir(parents=True)
                # a job of its own per case, as the direct runner starts them: working in the
                # case folder, the marker in its command line
                job = subprocess.Popen([f"caseflow-job-{i + 1}", "3600"], executable="sleep",
                                       cwd=folder, start_new_session=True)
                jobs.append(job)
                (folder / ".caseflow" / "pid").write_text(f"{job.pid}\n")
                add_case(engine.store, f"case{i}", str(work / "inbox" / f"case{i}"), "running",
                         now, group="gpu_a", host=host.name, remote_path=str(folder),
                         task_id=str(job.pid))
            transport = host.transport
            status = host.backend.status
            polls = []

            def timed_status(refs):  # the poll itself: the host's answer for all its jobs
                t0 = time.perf_counter()
                try:
                    return status(refs)
                finally:
                    polls.append(time.perf_counter() - t0)
            host.backend.status = timed_status
            samples = []
            for i in range(ticks + 1):  # the first tick opens the connection
                host.last_poll = float("-inf")
                c0, k0 = transport.connects, transport.commands
                t0, cpu0 = time.perf_counter(), time.thread_time()
                engine.tick()
                samples.append({"wall_s": time.perf_counter() - t0,
                                "cpu_s": time.thread_time() - cpu0,
                                "poll_s": polls[-1],
                                "connections": transport.connects - c0,
                                "commands": transport.commands - k0})
            states = {r.state for r in engine.store.cases()}
            engine.shutdown()
            if states != {"running"}:
                raise SystemExit(f"polling: the cases did not all stay running: {states}")
            steady = samples[1:]
            # the naive way: a new ssh connection and one command per case
            opts = ["-p", str(server.port), *ssh_options(server), f"{server.user}@127.0.0.1"]
            t0 = time.perf_counter()
            for i in range(naive_n):
                folder = remote / f"{i + 1}-case{i}"
                out = subprocess.run(["ssh", *opts, shlex.join(["sh", "-c", NAIVE_STATUS, "x",
                                                                str(folder)])],
                                     capture_output=True, text=True, check=True).stdout
                assert out.strip() == "running", out
            naive_per_case = (time.perf_counter() - t0) / naive_n
        finally:
            for job in jobs:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
    wall = median([s["wall_s"] for s in steady])
    result = {
        "running_cases": n,
        "first_tick": {k: round(v, 4) for k, v in samples[0].items()},
        "ticks_measured": len(steady),
        "connections_per_tick": max(s["connections"] for s in steady),
        "commands_per_tick": max(s["commands"] for s in steady),
        "tick_wall_s": round(wall, 4),
        "poll_wall_s": round(median([s["poll_s"] for s in steady]), 4),
        "poll_wall_max_s": round(max(s["poll_s"] for s in steady), 4),
        "tick_cpu_s": round(median([s["cpu_s"] for s in steady]), 4),
        "naive": {"cases_timed": naive_n, "per_case_s": round(naive_per_case, 4),
                  "connections_per_tick": n, "commands_per_tick": n,
                  "tick_wall_s": round(naive_per_case * n, 2)},
        "naive_tick_vs_caseflow": ratio(naive_per_case * n, wall),
    }
    print(f"caseflow: {result['connections_per_tick']} new connections, "
          f"{result['commands_per_tick']} command(s) per tick; the poll (the host's answer for "
          f"all {n} jobs) {result['poll_wall_s']:.3f} s wall; tick {wall:.3f} s wall, "
          f"{result['tick_cpu_s']:.3f} s CPU (medians of {len(steady)})")
    print(f"naive (ssh per case): {n} connections and commands per tick; "
          f"{naive_per_case * 1000:.0f} ms per case (timed over {naive_n}), "
          f"{naive_per_case * n:.1f} s per tick for {n}: "
          f"{result['naive_tick_vs_caseflow']}x caseflow's tick")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("-n", type=int, default=None, help="running cases (default 1000)")
    p.add_argument("--json")
    args = p.parse_args()
    result = {"machine": machine(), "polling": run(args.quick, args.n)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
