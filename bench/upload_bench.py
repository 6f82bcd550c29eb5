"""Upload: caseflow's ssh transport vs OpenSSH `scp -r` and `rsync -a`, same sshd, same run.

Each tool copies the same local folder to a fresh target on a tmpfs (so the remote disk
does not dominate), through the same private sshd on 127.0.0.1. Every copy is verified
after each run (every path, type, size and SHA-256) and removed. Runs are interleaved
(the order rotates each round) after one warm-up run of each tool; the median of
--repeat runs is reported with each tool's time as a ratio to caseflow's.

caseflow's time is a whole `upload_dir` on a fresh transport: connecting, listing the
target, the tar stream, the remote verification and the rename into place. The CPU time
each tool takes on this side (the login node's load) is reported too: this process's for
caseflow, the child processes' (scp, rsync and their ssh) for the others.

    python bench/upload_bench.py [--quick] [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (load, machine, median, ratio, section, ssh_options, sshd,  # noqa: E402
                    tmpfs, workdir)

from caseflow import casefolder  # noqa: E402
from caseflow.config import TransportConfig  # noqa: E402
from caseflow.transports.local import local_manifest  # noqa: E402
from caseflow.transports import ssh_packets  # noqa: E402
from caseflow.transports.ssh import SSHTransport  # noqa: E402
from sshd import transport_settings  # noqa: E402

GCM = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
PARAMIKO_SEND = "caseflow, paramiko's Channel.send"  # what ssh_packets.py replaces


def make_small_files(root: Path, count: int, size: int, folders: int) -> Path:
    d = root / "small"
    for i in range(count):
        sub = d / f"dir{i % folders:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.bin").write_bytes(os.urandom(size))
    os.sync()  # (see make_large_file)
    return d


def make_large_file(root: Path, size: int) -> Path:
    d = root / "large"
    d.mkdir()
    with open(d / "big.raw", "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    # written back now, not while the copies are timed: the kernel's write-back of a fresh
    # 1 GiB file ran through the first runs (CPU in I/O wait, 1 GiB copies 1.6-2.7 s)
    os.sync()
    return d


def digests(folder: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(folder):
        if dirpath == str(folder) and ".caseflow" in dirs:
            dirs.remove(".caseflow")  # caseflow's mark of a complete upload, not the case's
        for name in files:
            full = Path(dirpath, name)
            h = hashlib.sha256()
            with open(full, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[str(full.relative_to(folder))] = h.hexdigest()
    return out


class Tools:
    """The copy commands, each to a fresh target folder under `target_root`; through `port`
    (a link emulator in front of the server) when given, else to the server itself."""

    def __init__(self, server, target_root: Path, port: int | None = None, **caseflow):
        self.server = server
        self.target_root = target_root
        self.port = port or server.port
        known = server.known_hosts
        if port:
            known = server.write_known_hosts(server.root / f"known_hosts_{port}", port)
        self.known_hosts = known
        self.opts = ssh_options(server, known)
        self.dest = f"{server.user}@127.0.0.1"
        self.settings = {**transport_settings(self.server, self.target_root), "port": self.port,
                         "known_hosts": str(known), **caseflow}
        self.last_transport: SSHTransport | None = None

    def _target(self, name: str) -> Path:
        t = self.target_root / name
        if t.exists():
            shutil.rmtree(t)
        return t

    def caseflow(self, src: Path) -> Path:
        target = self._target("caseflow")
        t = self.last_transport = SSHTransport(TransportConfig(**self.settings))
        try:
            t.connect_ahead()  # as the daemon's upload step (case_model.upload_case)
            t.upload_dir(src, str(target), casefolder.scan(src))
        finally:
            t.close()
        return target

    def scp(self, src: Path, cipher: str | None = None) -> Path:
        target = self._target("scp")
        extra = ["-c", cipher] if cipher else []
        subprocess.run(["scp", "-q", "-r", "-P", str(self.port), *self.opts, *extra,
                        str(src), f"{self.dest}:{target}"], check=True)
        return target

    def rsync(self, src: Path) -> Path:
        target = self._target("rsync")
        ssh = " ".join(["ssh", "-p", str(self.port), *self.opts])
        subprocess.run(["rsync", "-a", "-e", ssh, f"{src}/", f"{self.dest}:{target}/"],
                       check=True)
        return target

    def caseflow_channel_send(self, src: Path) -> Path:
        """caseflow with paramiko's own Channel.send for all data (ssh_packets.py off)."""
        ssh_packets.ENABLED = False
        try:
            return self.caseflow(src)
        finally:
            ssh_packets.ENABLED = True

    def all(self) -> dict:
        tools = {"caseflow": self.caseflow, PARAMIKO_SEND: self.caseflow_channel_send,
                 "scp -r": self.scp}
        for c in GCM:
            tools[f"scp -r -c {c.split('@')[0]}"] = lambda s, c=c: self.scp(s, c)
        tools["rsync -a"] = self.rsync
        return tools


def _cpu() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def _timed(name: str, fn, src: Path, expected: set, sums: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds on this side) of one copy, verified and removed."""
    c0, t0 = _cpu(), time.perf_counter()
    target = fn(src)
    elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
    if local_manifest(target) != expected or digests(target) != sums:
        raise SystemExit(f"{name}: the copy in {target} does not match the source")
    shutil.rmtree(target)
    return elapsed, cpu


def compare(tools: dict, label: str, src: Path, repeat: int, warm_up: bool = True,
            sums: dict | None = None) -> dict:
    expected = casefolder.scan(src).as_set()
    sums = sums or digests(src)
    names = list(tools)
    for name in names if warm_up else ():  # page cache, sshd, the first connection
        _timed(name, tools[name], src, expected, sums)
    runs: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    loads = []
    for i in range(repeat):
        loads.append(load())
        for name in names[i % len(names):] + names[:i % len(names)]:
            wall, cpu = _timed(name, tools[name], src, expected, sums)
            runs[name].append(wall)
            cpus[name].append(cpu)
    medians = {n: median(v) for n, v in runs.items()}
    ours = medians["caseflow"]
    others = {n: m for n, m in medians.items() if not n.startswith("caseflow")}
    best = min(others, key=others.get)
    scps = {n: m for n, m in others.items() if n.startswith("scp")}
    out = {
        "data": label, "repeat": repeat, "load": loads,
        "tools": {n: {"median_s": round(m, 3), "runs_s": [round(x, 3) for x in runs[n]],
                      "time_vs_caseflow": ratio(m, ours),
                      "client_cpu_s": round(median(cpus[n]), 3)} for n, m in medians.items()},
        "caseflow_vs_fastest": {"tool": best, "ratio": ratio(ours, others[best])},
        "caseflow_vs_rsync": ratio(ours, others["rsync -a"]),
    }
    if scps:
        best_scp = min(scps, key=scps.get)
        out["caseflow_vs_fastest_scp"] = {"tool": best_scp, "ratio": ratio(ours, scps[best_scp])}
    return out


def run(quick: bool = False, repeat: int | None = None) -> dict:
    small_count, large_mib = (500, 32) if quick else (10_000, 1024)
    repeat = repeat or (1 if quick else 5)
    section(f"upload: caseflow vs scp -r and rsync -a, median of {repeat}")
    out = {}
    with workdir("upload") as work:
        src = work / "src"
        src.mkdir()
        with sshd(work) as server, tmpfs(work / "target", large_mib + 256) as on_tmpfs:
            tools = Tools(server, work / "target").all()
            small = make_small_files(src, small_count, 4096, 100)
            out["small"] = compare(tools, f"{small_count:,} files of 4 KiB in 100 folders",
                                   small, repeat)
            shutil.rmtree(small)
            large = make_large_file(src, large_mib << 20)
            out["large"] = compare(tools, f"one {large_mib:,} MiB file", large, repeat)
        out["target_on_tmpfs"] = on_tmpfs
    for key in ("small", "large"):
        r = out[key]
        print(f"{r['data']}:")
        for name, t in r["tools"].items():
            print(f"  {name:34} {t['median_s']:8.3f} s   ÷ caseflow {t['time_vs_caseflow']:6}   "
                  f"CPU here {t['client_cpu_s']:.2f} s")
        print(f"  caseflow ÷ rsync -a {r['caseflow_vs_rsync']}, caseflow ÷ fastest scp "
              f"({r['caseflow_vs_fastest_scp']['tool']}) {r['caseflow_vs_fastest_scp']['ratio']}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small data, one run (a smoke test)")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    result = {"machine": machine(), "upload": run(args.quick, args.repeat)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
