"""Pipeline: tiny cases end to end over SSH, caseflow vs the naive script, same sshd.

caseflow: `caseflow run` (a real process) with the ssh transport and the direct runner;
the case folders are moved into its inbox at once, and the time runs from then until the
last case is `success` (detection, the quiet period, validation, slots, upload, submit,
polling, the job log and results brought home, the wrap-up).

The naive way: bench/naive_pipeline.sh, the seed's design as a plain script (per case
`scp -r`, `ssh` to start the job, then one `ssh` per unfinished case per poll), on copies
of the same folders, the same job and the same poll interval.

Reported: cases per minute of each, and their ratio (target: caseflow >= 10x).

    python bench/pipeline_bench.py [--quick] [-n 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, machine, ratio, section, ssh_options, sshd, tmpfs  # noqa: E402
from benchlib import workdir  # noqa: E402

from caseflow.store import Store  # noqa: E402
from sshd import transport_settings  # noqa: E402

JOB = "echo done > out.txt"
TERMINAL = ("success", "failure", "not_found")


def make_cases(folder: Path, n: int) -> list[str]:
    names = []
    for i in range(n):
        name = f"case-{i:03d}"
        d = folder / name
        (d / "scans").mkdir(parents=True)
        (d / "metadata.txt").write_text(f"case {i}\n")
        (d / "scans" / "slice_001.raw").write_bytes(os.urandom(2048))
        names.append(name)
    return names


def caseflow(work: Path, server, remote: Path, n: int, quiet: float, poll: float) -> dict:
    staging = work / "cf-staging"
    names = make_cases(staging, n)
    (work / "inbox").mkdir()
    config = work / "caseflow.yaml"
    config.write_text(yaml.safe_dump({
        "inbox": "inbox", "database": "caseflow.db", "poll_seconds": poll,
        "stability": {"quiet_seconds": quiet},
        "groups": {"gpu_a": {"slots": n}},
        "transport": transport_settings(server, remote),
        "backend": {"kind": "direct", "command": JOB},
        "log": {"level": "WARNING"}}))
    log = work / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "caseflow.cli", "run", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
                            env={**os.environ, "PYTHONPATH": str(ROOT / "engine")})
    try:
        deadline = time.monotonic() + 60
        while not (work / "caseflow.db").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start:\n{log.read_text()}")
            time.sleep(0.05)
        time.sleep(1.0)  # started and idle
        store = Store(work / "caseflow.db")
        t0 = time.time()
        for name in names:
            os.rename(staging / name, work / "inbox" / name)
        deadline = time.monotonic() + 600
        while True:
            rows = store.cases()
            if len(rows) == n and all(r.state in TERMINAL for r in rows):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"caseflow: not all {n} cases ended within 600 s")
            time.sleep(0.1)
        bad = [(r.name, r.state, r.reason) for r in rows if r.state != "success"]
        if bad:
            raise SystemExit(f"caseflow: cases did not succeed: {bad[:3]}")
        ends = [max(h.at for h in store.history(r.id) if h.dst == "success") for r in rows]
        elapsed = max(ends) - t0
        store.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    for name in names:  # the job ran in each and its output came home
        if (work / "results" / name / "out.txt").read_text() != "done\n":
            raise SystemExit(f"caseflow: {name}: no result")
    return {"seconds": round(elapsed, 2), "cases_per_minute": round(n / elapsed * 60, 1)}


def naive(work: Path, server, remote: Path, n: int, poll: float) -> dict:
    src = work / "naive-src"
    names = make_cases(src, n)
    remote.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run(["bash", str(ROOT / "bench" / "naive_pipeline.sh"), str(src), str(remote),
                    f"{server.user}@127.0.0.1", str(server.port), str(poll), JOB,
                    *ssh_options(server)], check=True)
    elapsed = time.perf_counter() - t0
    for name in names:
        if (remote / name / "out.txt").read_text() != "done\n":
            raise SystemExit(f"naive: {name}: the job did not run")
    return {"seconds": round(elapsed, 2), "cases_per_minute": round(n / elapsed * 60, 1)}


def run(quick: bool = False, n: int | None = None, quiet: float = 1.0,
        poll: float = 1.0) -> dict:
    n = n or (20 if quick else 200)
    section(f"pipeline: {n} tiny cases end to end over SSH (direct runner)")
    with workdir("pipeline") as work, sshd(work) as server, \
            tmpfs(work / "remote", 512) as on_tmpfs:
        ours = caseflow(work, server, work / "remote" / "caseflow", n, quiet, poll)
        theirs = naive(work, server, work / "remote" / "naive", n, poll)
    result = {"cases": n, "quiet_seconds": quiet, "poll_seconds": poll, "job": JOB,
              "remote_on_tmpfs": on_tmpfs, "caseflow": ours, "naive": theirs,
              "caseflow_vs_naive": ratio(ours["cases_per_minute"], theirs["cases_per_minute"])}
    print(f"caseflow: {n} cases in {ours['seconds']} s = {ours['cases_per_minute']} cases/min "
          f"(quiet period {quiet} s, poll every {poll} s)")
    print(f"naive script: {n} cases in {theirs['seconds']} s = {theirs['cases_per_minute']} "
          f"cases/min; caseflow {result['caseflow_vs_naive']}x")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("-n", type=int, default=None, help="cases (default 200)")
    p.add_argument("--json")
    args = p.parse_args()
    result = {"machine": machine(), "pipeline": run(args.quick, args.n)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
