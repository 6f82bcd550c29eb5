"""Time from copying a case into the inbox to `success`, on the embedded default.

Runs `caseflow run` on a copy of config/local.yaml in a temp folder, copies
examples/sample_case into the inbox N times (one after the other), and reads the
times of each case's transitions from the store: end of copy -> stable (the
quiet period plus the admission delay) and stable -> success (validation, slot,
upload, submit, poll).

    python bench/admission_latency.py [-n 5]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "engine"))

from caseflow.store import Store  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=5, help="how many copies (default 5)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="caseflow-admission-"))
    settings = yaml.safe_load((ROOT / "config" / "local.yaml").read_text())
    (work / "inbox").mkdir()
    settings.update(inbox=str(work / "inbox"), database=str(work / "caseflow.db"))
    settings["transport"]["root"] = str(work / "remote")
    config = work / "caseflow.yaml"
    config.write_text(yaml.safe_dump(settings))
    log = open(work / "daemon.log", "wb")
    daemon = subprocess.Popen([sys.executable, "-m", "caseflow.cli", "run", "-c", str(config)],
                              stderr=log, stdout=subprocess.DEVNULL)
    try:
        while b"caseflow running" not in (work / "daemon.log").read_bytes():
            time.sleep(0.05)
        store = Store(work / "caseflow.db")
        quiet = settings["stability"]["quiet_seconds"]
        print(f"quiet period {quiet} s, tick {settings['tick_seconds']} s")
        for i in range(args.n):
            name = f"sample-{i}"
            shutil.copytree(ROOT / "examples" / "sample_case", work / "inbox" / name)
            copied = time.time()
            deadline = copied + quiet + 60
            while True:
                rows = [r for r in store.cases() if r.name == name]
                if rows and rows[0].state in ("success", "failure", "not_found"):
                    break
                if time.time() > deadline:
                    raise SystemExit(f"{name} did not finish within {quiet + 60} s")
                time.sleep(0.02)
            at = {h.dst: h.at for h in store.history(rows[0].id)}
            print(f"{name}: {rows[0].state}; end of copy -> stable {at['stable'] - copied:.2f} s, "
                  f"stable -> {rows[0].state} {at[rows[0].state] - at['stable']:.2f} s, "
                  f"end of copy -> {rows[0].state} {at[rows[0].state] - copied:.2f} s")
        store.close()
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
