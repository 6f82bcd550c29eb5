"""Admission latency on the embedded default: how soon a copied case is `stable`, and `success`.

Runs `caseflow run` (a real process) on a copy of config/local.yaml in a temp folder and
copies examples/sample_case into the inbox; the times of each case's transitions are read
from the store's history.

Default (-n N): N copies one after the other; prints end of copy -> stable (the quiet
period plus the admission delay) and stable -> success (validation, slot, upload, submit,
poll) for each.

--at-once 1,100: for each count, a fresh daemon, and that many case folders copied into
the inbox by one `cp -r`. For every folder, the time of the last write into it (the newest
ctime in its tree) to its `stable` transition, less the quiet period: the admission delay
(target: at most 0.5 s). The quiet period is the floor any quiet-period admission has.

    python bench/admission_latency.py [-n 5] [--at-once 1,100] [--quiet S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, machine, median, section  # noqa: E402

from caseflow.store import Store  # noqa: E402

SAMPLE = ROOT / "examples" / "sample_case"
TERMINAL = ("success", "failure", "not_found")


class LocalDaemon:
    """`caseflow run` on a copy of config/local.yaml in `work` (quiet period `quiet`)."""

    def __init__(self, work: Path, quiet: float | None = None):
        self.work = work
        self.settings = yaml.safe_load((ROOT / "config" / "local.yaml").read_text())
        (work / "inbox").mkdir()
        self.settings.update(inbox=str(work / "inbox"), database=str(work / "caseflow.db"))
        self.settings["transport"]["root"] = str(work / "remote")
        if quiet is not None:
            self.settings["stability"]["quiet_seconds"] = quiet
        self.quiet = self.settings["stability"]["quiet_seconds"]
        config = work / "caseflow.yaml"
        config.write_text(yaml.safe_dump(self.settings))
        self.log_path = work / "daemon.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "caseflow.cli", "run", "-c",
                                      str(config)], stderr=open(self.log_path, "wb"),
                                     stdout=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONPATH": str(ROOT / "engine")})
        deadline = time.monotonic() + 60
        while b"caseflow running" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        self.store = Store(work / "caseflow.db")

    def wait(self, names: set[str], states: tuple, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            rows = {r.name: r for r in self.store.cases() if r.name in names}
            if len(rows) == len(names) and all(
                    r.state in states or any(h.dst in states for h in self.store.history(r.id))
                    for r in rows.values()):
                return rows
            if time.monotonic() > deadline:
                raise SystemExit(f"not all of {len(names)} cases reached {states} in {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        self.store.close()
        self.proc.terminate()
        self.proc.wait(timeout=60)


def last_write(folder: Path) -> float:
    newest = os.lstat(folder).st_ctime
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + files:
            newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_ctime)
    return newest


def at_once(count: int, quiet: float | None = None) -> dict:
    """`count` case folders copied into the inbox by one cp; last write -> stable, each."""
    with tempfile.TemporaryDirectory(prefix="caseflow-bench-admission-") as tmp:
        work = Path(tmp)
        staging = work / "staging"
        names = [f"case-{i:03d}" for i in range(count)]
        for name in names:
            shutil.copytree(SAMPLE, staging / name)
        daemon = LocalDaemon(work, quiet)
        try:
            time.sleep(0.5)  # the daemon's first ticks are done
            t0 = time.time()
            subprocess.run(["cp", "-r", *[str(staging / n) for n in names],
                            str(work / "inbox")], check=True)
            copied = time.time() - t0
            written = {n: last_write(work / "inbox" / n) for n in names}
            rows = daemon.wait(set(names), ("stable",), daemon.quiet + 60)
            delays = []
            for name, row in rows.items():
                stable = next(h.at for h in daemon.store.history(row.id) if h.dst == "stable")
                delays.append(stable - written[name] - daemon.quiet)
            daemon.wait(set(names), TERMINAL, 120)
        finally:
            daemon.stop()
    return {"folders": count, "quiet_seconds": daemon.quiet, "copy_s": round(copied, 3),
            "delay_beyond_quiet_s": {"median": round(median(delays), 3),
                                     "max": round(max(delays), 3),
                                     "min": round(min(delays), 3)}}


def run(quick: bool = False, counts=(1, 100), quiet: float | None = None) -> dict:
    quiet = quiet if quiet is not None else (1.0 if quick else None)
    section("admission: last write into a case folder -> stable")
    out = {}
    for count in counts:
        r = at_once(count, quiet)
        d = r["delay_beyond_quiet_s"]
        print(f"{count:4} folder(s) copied at once: quiet period {r['quiet_seconds']} s + "
              f"median {d['median']:.3f} s, max {d['max']:.3f} s (copy took {r['copy_s']} s)")
        out[str(count)] = r
    return out


def sequential(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="caseflow-bench-admission-") as tmp:
        daemon = LocalDaemon(Path(tmp))
        print(f"quiet period {daemon.quiet} s, tick {daemon.settings['tick_seconds']} s")
        try:
            for i in range(n):
                name = f"sample-{i}"
                shutil.copytree(SAMPLE, Path(tmp) / "inbox" / name)
                copied = time.time()
                row = daemon.wait({name}, TERMINAL, daemon.quiet + 60)[name]
                at = {h.dst: h.at for h in daemon.store.history(row.id)}
                print(f"{name}: {row.state}; end of copy -> stable {at['stable'] - copied:.2f} s, "
                      f"stable -> {row.state} {at[row.state] - at['stable']:.2f} s, "
                      f"end of copy -> {row.state} {at[row.state] - copied:.2f} s")
        finally:
            daemon.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=5, help="copies one after the other (default 5)")
    p.add_argument("--at-once", help="counts of folders copied at once, e.g. 1,100")
    p.add_argument("--quiet", type=float, help="stability.quiet_seconds (default: the config's)")
    p.add_argument("--json")
    args = p.parse_args()
    if not args.at_once:
        sequential(args.n)
        return 0
    result = {"machine": machine(),
              "admission": run(counts=[int(c) for c in args.at_once.split(",")],
                               quiet=args.quiet)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
