"""Upload benchmark: caseflow's ssh transport vs OpenSSH `scp -r` vs `rsync -a`, same sshd, same run.

Each tool copies the same local folder to a fresh target on a tmpfs (so the remote
disk does not dominate); every copy is verified (file count and sizes) after each
run; runs are interleaved and the median of --repeat runs is reported, with each
tool's time as a ratio to caseflow's and to the fastest alternative.

Also measures polling: with N running cases on one host (direct runner), the SSH
connections and commands one poll tick costs.

    python bench/upload_bench.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "engine"), str(ROOT / "tests")]

from caseflow import casefolder  # noqa: E402
from caseflow.backends import JobRef, JobSpec  # noqa: E402
from caseflow.backends.direct import DirectBackend  # noqa: E402
from caseflow.config import TransportConfig  # noqa: E402
from caseflow.transports.local import local_manifest  # noqa: E402
from caseflow.transports.ssh import SSHTransport  # noqa: E402
from sshd import SSHServer, transport_settings  # noqa: E402


def make_small_files(root: Path, count: int, size: int, folders: int) -> Path:
    d = root / "small"
    for i in range(count):
        sub = d / f"dir{i % folders:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.bin").write_bytes(os.urandom(size))
    return d


def make_large_file(root: Path, size: int) -> Path:
    d = root / "large"
    d.mkdir()
    with open(d / "big.raw", "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)
    return d


class Bench:
    def __init__(self, work: Path, server: SSHServer, target_root: Path):
        self.work = work
        self.server = server
        self.target_root = target_root
        self.ssh_opts = ["-o", f"UserKnownHostsFile={server.known_hosts}", "-o",
                         "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-i",
                         str(server.client_key)]
        self.dest = f"{server.user}@127.0.0.1"

    def _target(self, name: str) -> Path:
        t = self.target_root / name
        if t.exists():
            shutil.rmtree(t)
        return t

    def caseflow(self, src: Path) -> Path:
        target = self._target("caseflow")
        t = SSHTransport(TransportConfig(**transport_settings(self.server, self.target_root)))
        t.upload_dir(src, str(target), casefolder.scan(src))
        t.close()
        return target

    def scp(self, src: Path, cipher: str | None = None) -> Path:
        target = self._target("scp" + (cipher or ""))
        extra = ["-c", cipher] if cipher else []
        subprocess.run(["scp", "-q", "-r", "-P", str(self.server.port), *self.ssh_opts, *extra,
                        str(src), f"{self.dest}:{target}"], check=True)
        return target

    def rsync(self, src: Path) -> Path:
        target = self._target("rsync")
        ssh = " ".join(["ssh", "-p", str(self.server.port), *self.ssh_opts])
        subprocess.run(["rsync", "-a", "-e", ssh, f"{src}/", f"{self.dest}:{target}/"],
                       check=True)
        return target


def timed(fn, src: Path, expected) -> float:
    t0 = time.perf_counter()
    target = fn(src)
    elapsed = time.perf_counter() - t0
    got = local_manifest(target)
    if got != expected:
        raise SystemExit(f"{fn.__name__}: the copy does not match the source")
    shutil.rmtree(target)
    return elapsed


def upload_rows(bench: Bench, label: str, src: Path, repeat: int) -> list[dict]:
    expected = casefolder.scan(src).as_set()
    tools = {"caseflow": bench.caseflow, "scp -r": bench.scp,
             "scp -r (aes128-gcm)": lambda s: bench.scp(s, "aes128-gcm@openssh.com"),
             "rsync -a": bench.rsync}
    for fn in tools.values():  # warm-up: page cache, sshd
        timed(fn, src, expected)
    times: dict[str, list[float]] = {k: [] for k in tools}
    for _ in range(repeat):  # interleaved
        for name, fn in tools.items():
            times[name].append(timed(fn, src, expected))
    medians = {k: statistics.median(v) for k, v in times.items()}
    ours = medians["caseflow"]
    best_other = min(v for k, v in medians.items() if k != "caseflow")
    rows = []
    for name, m in medians.items():
        rows.append({"data": label, "tool": name, "median_s": round(m, 3),
                     "runs": [round(x, 3) for x in times[name]],
                     "time_vs_caseflow": round(m / ours, 2)})
    rows.append({"data": label, "tool": "caseflow / fastest alternative",
                 "ratio": round(ours / best_other, 2)})
    return rows


def polling(server: SSHServer, work: Path, n: int) -> dict:
    root = work / "poll"
    root.mkdir()
    t = SSHTransport(TransportConfig(**transport_settings(server, root)))
    backend = DirectBackend(t)
    refs = []
    for i in range(n):
        d = root / f"case{i}"
        d.mkdir()
        job = JobSpec(i, f"l{i}", str(d), "g", "sleep 600")
        refs.append(JobRef(i, backend.submit(job), f"l{i}", str(d)))
    c0, k0 = t.connects, t.commands
    t0 = time.perf_counter()
    answers = backend.status(refs)
    elapsed = time.perf_counter() - t0
    result = {"running_cases": n, "connections_per_tick": t.connects - c0,
              "commands_per_tick": t.commands - k0, "tick_poll_s": round(elapsed, 3),
              "all_running": all(a.outcome == "running" for a in answers.values())}
    for r in refs:
        backend.cancel(r)
    t.close()
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small data, one run (a smoke test)")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    small_count, large_mib, repeat, poll_n = (10_000, 1024, 3, 100)
    if args.quick:
        small_count, large_mib, repeat, poll_n = (500, 16, 1, 10)
    repeat = args.repeat or repeat

    work = Path(tempfile.mkdtemp(prefix="caseflow-bench-"))
    target = work / "target"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={large_mib + 512}m", "tmpfs",
                              str(target)]).returncode == 0
    server = SSHServer(work / "sshd").start()
    try:
        src = work / "src"
        src.mkdir()
        rows = []
        small = make_small_files(src, small_count, 4096, 100)
        rows += upload_rows(Bench(work, server, target), f"{small_count} files of 4 KiB", small,
                            repeat)
        large = make_large_file(src, large_mib << 20)
        rows += upload_rows(Bench(work, server, target), f"one {large_mib} MiB file", large,
                            repeat)
        poll = polling(server, work, poll_n)
    finally:
        server.stop()
        if mounted:
            subprocess.run(["umount", str(target)])
        shutil.rmtree(work, ignore_errors=True)

    print(f"machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}; "
          f"target on {'tmpfs' if mounted else 'disk'}; median of {repeat} interleaved runs")
    print(f"{'data':28} {'tool':32} {'median s':>9} {'÷ caseflow':>11}")
    for r in rows:
        if "ratio" in r:
            print(f"{r['data']:28} {r['tool']:32} {'':>9} {r['ratio']:>11}")
        else:
            print(f"{r['data']:28} {r['tool']:32} {r['median_s']:>9} "
                  f"{r['time_vs_caseflow']:>11}")
    print(f"polling {poll['running_cases']} running cases: {poll['connections_per_tick']} new "
          f"connections, {poll['commands_per_tick']} command(s) per tick, "
          f"{poll['tick_poll_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"uploads": rows, "polling": poll}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
