"""The `openssh` transport (system ssh through a master connection) against the `ssh`
transport (paramiko), same sshd, same run.

Measured with each transport's connection already open, as in a running daemon (the
warm-up run opens it): uploading 10,000 files of 4 KiB in 100 folders and one 1 GiB file
into a tmpfs (every copy verified: paths, types, sizes, SHA-256), a tick of the engine
polling 1,000 running cases (the direct runner's batched status, one command per tick), and
one short command's round trip. The CPU time on the sending side counts this process, its
children (openssh: the ssh processes of the channels) and, for openssh, the master process,
which does the encryption. The master is opened by caseflow itself (`master: daemon`): a
one-time code changes nothing once the connection is up.

    python bench/openssh_bench.py [--quick] [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (add_case, load, machine, median, ratio, section, sshd, tmpfs,  # noqa: E402
                      workdir, write_config)
from upload_bench import Tools, _cpu, digests, make_large_file, make_small_files  # noqa: E402

from caseflow import casefolder  # noqa: E402
from caseflow.config import TransportConfig  # noqa: E402
from caseflow.core.engine import Engine  # noqa: E402
from caseflow.transports import make_transport  # noqa: E402
from caseflow.transports.local import local_manifest  # noqa: E402
from sshd import transport_settings  # noqa: E402

KINDS = ("ssh", "openssh")
SCP_CIPHER = "aes128-gcm@openssh.com"


def settings(kind: str, server, root: Path, work: Path) -> dict:
    s = transport_settings(server, root)
    if kind == "openssh":
        s.update(kind="openssh", master="daemon", control_path=str(work / f"cm-{os.getpid()}"))
    return s


def _master_cpu(t) -> float:
    """CPU seconds of an openssh transport's master process so far (0 for paramiko)."""
    pid = t.channels.master.pid() if hasattr(t.channels, "master") else None
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _upload(t, src: Path, target: Path, expected: set, sums: dict) -> tuple[float, float]:
    if target.exists():
        shutil.rmtree(target)
    c0, m0, t0 = _cpu(), _master_cpu(t), time.perf_counter()
    t.upload_dir(src, str(target), casefolder.scan(src))
    wall = time.perf_counter() - t0
    cpu = _cpu() - c0 + _master_cpu(t) - m0
    if local_manifest(target) != expected or digests(target) != sums:
        raise SystemExit(f"{type(t).__name__}: the copy in {target} does not match the source")
    shutil.rmtree(target)
    return wall, cpu


def _scp(tools: Tools, src: Path, expected: set, sums: dict) -> tuple[float, float]:
    c0, t0 = _cpu(), time.perf_counter()
    target = tools.scp(src, SCP_CIPHER)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if local_manifest(target) != expected or digests(target) != sums:
        raise SystemExit(f"scp: the copy in {target} does not match the source")
    shutil.rmtree(target)
    return wall, cpu


def compare_upload(transports: dict, label: str, src: Path, target_root: Path,
                   repeat: int, scp: Tools | None = None) -> dict:
    """The two transports in turn; with `scp`, `scp -r -c aes128-gcm` as well (the loopback
    targets are ratios to the fastest scp)."""
    expected, sums = casefolder.scan(src).as_set(), digests(src)
    kinds = [*KINDS, *(["scp"] if scp else [])]

    def one(kind: str) -> tuple[float, float]:
        if kind == "scp":
            assert scp is not None
            return _scp(scp, src, expected, sums)
        return _upload(transports[kind], src, target_root / kind, expected, sums)
    for kind in kinds:  # warm-up: page cache, the connection
        one(kind)
    runs: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(repeat):
        for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
            wall, cpu = one(kind)
            runs[kind].append(wall)
            cpus[kind].append(cpu)
    med = {k: median(v) for k, v in runs.items()}
    out = {"data": label, "repeat": repeat,
           "tools": {k: {"median_s": round(med[k], 3), "runs_s": [round(x, 3) for x in runs[k]],
                         "client_cpu_s": round(median(cpus[k]), 3)} for k in kinds},
           "openssh_vs_ssh": ratio(med["openssh"], med["ssh"]),
           "cpu_openssh_vs_ssh": ratio(median(cpus["openssh"]), median(cpus["ssh"]))}
    if scp:
        out["scp"] = f"scp -r -c {SCP_CIPHER.split('@')[0]}"
        out["openssh_vs_scp"] = ratio(med["openssh"], med["scp"])
        out["cpu_openssh_vs_scp"] = ratio(median(cpus["openssh"]), median(cpus["scp"]))
    return out


def round_trips(transports: dict, count: int) -> dict:
    out = {}
    for kind, t in transports.items():
        t.run(["true"])
        t0 = time.perf_counter()
        for _ in range(count):
            assert t.run(["true"]).returncode == 0
        out[kind] = round((time.perf_counter() - t0) / count * 1000, 2)
    return {"commands": count, "ms": out, "openssh_vs_ssh": ratio(out["openssh"], out["ssh"])}


def start_jobs(remote: Path, n: int) -> list[subprocess.Popen]:
    """n case folders on the host, each with a job of its own as the direct runner starts
    them (working in the case folder, the marker in its command line; bench/polling_bench.py)."""
    jobs = []
    for i in range(n):
        folder = remote / f"{i + 1}-case{i}"
        (folder / ".caseflow" / "launched").mkdir(parents=True)
        jobs.append(subprocess.Popen([f"caseflow-job-{i + 1}", "3600"], executable="sleep",
                                     cwd=folder, start_new_session=True))
        (folder / ".caseflow" / "pid").write_text(f"{jobs[-1].pid}\n")
    return jobs


def poll_setup(kind: str, server, work: Path, remote: Path, jobs: list) -> Engine:
    """An engine whose store holds a running case for each job, on one host over `kind`
    (both engines poll the same case folders)."""
    base = work / f"poll-{kind}"
    (base / "inbox").mkdir(parents=True)
    config = write_config(base / "caseflow.yaml", {
        "inbox": "inbox", "database": "caseflow.db", "poll_seconds": 1,
        "groups": {"gpu_a": {"slots": len(jobs)}},
        "transport": settings(kind, server, remote, work),
        "backend": {"kind": "direct", "command": "true"}})
    engine = Engine(config)
    engine.start(workers=False)
    now = time.time()
    for i, job in enumerate(jobs):
        add_case(engine.store, f"case{i}", str(base / "inbox" / f"case{i}"), "running", now,
                 group="gpu_a", host=engine.first_host.name,
                 remote_path=str(remote / f"{i + 1}-case{i}"), task_id=str(job.pid))
    return engine


def poll(engines: dict, ticks: int) -> dict:
    """Ticks of each engine, taken in turn (the load of the machine hits both alike)."""
    walls: dict = {k: [] for k in engines}
    commands: dict = {k: [] for k in engines}
    for i in range(ticks + 1):  # the first tick may open the connection
        for kind in (KINDS if i % 2 == 0 else KINDS[::-1]):
            engine = engines[kind]
            host = engine.first_host
            host.last_poll = float("-inf")
            k0, t0 = host.transport.commands, time.perf_counter()
            engine.tick()
            if i:
                walls[kind].append(time.perf_counter() - t0)
                commands[kind].append(host.transport.commands - k0)
    out = {}
    for kind, engine in engines.items():
        states = {r.state for r in engine.store.cases()}
        if states != {"running"}:
            raise SystemExit(f"poll over {kind}: the cases did not all stay running: {states}")
        out[kind] = {"tick_wall_s": round(median(walls[kind]), 4),
                     "commands_per_tick": max(commands[kind])}
    return out


def run(quick: bool = False, repeat: int | None = None) -> dict:
    small_count, large_mib, n = (500, 32, 100) if quick else (10_000, 1024, 1000)
    repeat = repeat or (1 if quick else 5)
    ticks = 3 if quick else 10
    section(f"openssh vs ssh (paramiko): uploads (median of {repeat}), a poll of {n:,}")
    out: dict = {"load": [load()]}
    with workdir("openssh") as work:
        src = work / "src"
        src.mkdir()
        with sshd(work) as server, tmpfs(work / "target", large_mib + 256) as on_tmpfs:
            transports = {k: make_transport(TransportConfig(**settings(
                k, server, work / "target", work))) for k in KINDS}
            try:
                out["round_trip"] = round_trips(transports, 20 if quick else 200)
                small = make_small_files(src, small_count, 4096, 100)
                out["small"] = compare_upload(transports, f"{small_count:,} files of 4 KiB "
                                              "in 100 folders", small, work / "target", repeat)
                shutil.rmtree(small)
                large = make_large_file(src, large_mib << 20)
                out["large"] = compare_upload(transports, f"one {large_mib:,} MiB file", large,
                                              work / "target", repeat,
                                              scp=Tools(server, work / "target"))
                shutil.rmtree(large)
            finally:
                transports["openssh"].channels.master.exit()
            out["target_on_tmpfs"] = on_tmpfs
            remote = work / "poll-remote"
            remote.mkdir()
            jobs, engines = [], {}
            try:
                jobs = start_jobs(remote, n)
                for kind in KINDS:
                    engines[kind] = poll_setup(kind, server, work, remote, jobs)
                out["poll"] = {"running_cases": n, **poll(engines, ticks)}
            finally:
                for engine in engines.values():
                    engine.shutdown()
                for job in jobs:
                    os.killpg(job.pid, signal.SIGKILL)
                    job.wait()
                subprocess.run(transports["openssh"].channels.master.control("exit"),
                               capture_output=True)
            p = out["poll"]
            p["openssh_vs_ssh"] = ratio(p["openssh"]["tick_wall_s"], p["ssh"]["tick_wall_s"])
    out["load"].append(load())
    for key in ("small", "large"):
        r = out[key]
        print(f"{r['data']}:  " + "   ".join(
            f"{k} {v['median_s']:.3f} s (CPU here {v['client_cpu_s']:.2f} s)"
            for k, v in r["tools"].items())
            + f"   openssh ÷ ssh {r['openssh_vs_ssh']} (CPU {r['cpu_openssh_vs_ssh']})")
    p = out["poll"]
    print(f"poll of {n:,} running cases, one tick:  ssh {p['ssh']['tick_wall_s']:.3f} s   "
          f"openssh {p['openssh']['tick_wall_s']:.3f} s   openssh ÷ ssh {p['openssh_vs_ssh']}")
    rt = out["round_trip"]
    print(f"one command's round trip:  ssh {rt['ms']['ssh']} ms   openssh {rt['ms']['openssh']}"
          f" ms   openssh ÷ ssh {rt['openssh_vs_ssh']}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small data, one run (a smoke test)")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    result = {"machine": machine(), "openssh": run(args.quick, args.repeat)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
