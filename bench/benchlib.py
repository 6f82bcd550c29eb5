"""What the benchmarks share: the machine they ran on, a private sshd, a tmpfs, a result table.

Every benchmark compares caseflow with a real alternative measured in the same run on this
machine; nothing here holds a typed-in figure.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "engine", ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def load() -> float:
    """The 1-minute load average (other work on the machine skews wall times)."""
    return round(os.getloadavg()[0], 2)


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    import paramiko
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_mib": mem,
            "kernel": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "paramiko": paramiko.__version__,
            "openssh": (ssh.stderr or ssh.stdout).strip().split(",")[0],
            "load_at_start": load()}


def wait_for_quiet(limit: float = 1.0, patience: float = 120.0) -> float:
    """Wait (up to `patience` s) until the load average is at most `limit`; return it."""
    deadline = time.monotonic() + patience
    while load() > limit and time.monotonic() < deadline:
        time.sleep(5)
    return load()


@contextlib.contextmanager
def workdir(prefix: str):
    d = Path(tempfile.mkdtemp(prefix=f"caseflow-bench-{prefix}-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def tmpfs(path: Path, size_mib: int):
    """A tmpfs at `path` when possible (root); yields whether it is one."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs",
                              str(path)], stderr=subprocess.DEVNULL).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)])


# OpenSSH's default: sessions (channels running a command) open at once on one connection.
# The test suite's sshd allows 100; what caseflow can keep in flight depends on it.
MAX_SESSIONS = 10


@contextlib.contextmanager
def sshd(work: Path):
    """A private OpenSSH server on 127.0.0.1 (the test suite's, with OpenSSH's default
    MaxSessions), and OpenSSH client options."""
    from sshd import SSHServer

    class BenchServer(SSHServer):
        def config_text(self) -> str:
            text = super().config_text()
            assert "MaxSessions 100\n" in text
            return text.replace("MaxSessions 100\n", f"MaxSessions {MAX_SESSIONS}\n")

    server = BenchServer(work / "sshd").start()
    try:
        yield server
    finally:
        server.stop()


def ssh_options(server, known_hosts: Path | None = None) -> list[str]:
    return ["-o", f"UserKnownHostsFile={known_hosts or server.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-i",
            str(server.client_key)]


def median(values) -> float:
    return statistics.median(values)


def ratio(a: float, b: float) -> float:
    """a / b to three significant digits."""
    return float(f"{a / b:.3g}") if b else float("inf")


def rss_mib(pid: int | str = "self") -> tuple[float, float]:
    """(resident, peak resident) of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def section(title: str) -> None:
    print(f"\n== {title} (load {load()})", flush=True)


def write_config(path: Path, settings: dict):
    """Write a caseflow config file and load it."""
    import yaml
    from caseflow.config import load_config
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return load_config(path)


# The states a case passes through to `running`, with the trigger that takes it there.
TO_RUNNING = [("detected", "stable", "stabilize"), ("stable", "queued", "enqueue"),
              ("queued", "gpu_locked", "lock_gpu"), ("gpu_locked", "uploaded", "upload"),
              ("uploaded", "running", "submit")]


def add_case(store, name: str, local_path: str, until: str, now: float, *, group: str,
             host: str, remote_path: str | None = None, task_id: str = "1") -> int:
    """A case taken through the store's own transitions (each one transaction, as the engine
    commits them) up to `until`: queued, running or success (released slot, no wrap-up).
    Its folder's inode is recorded when the folder exists (the daemon knows it then)."""
    from caseflow.casefolder import inode_of
    inode = inode_of(Path(local_path)) or f"0:{name}"
    case_id = store.create_case(name, local_path, inode, "detected", now, now)
    for src, dst, trigger in TO_RUNNING:
        changes, take = {}, None
        if dst == "queued":
            changes = {"grp": group, "file_count": 1, "size_bytes": 4}
        elif dst == "gpu_locked":
            take = store.free_slot(group, [host]).id
            changes = {"host": host}
        elif dst == "uploaded":
            changes = {"remote_path": remote_path or f"/nonexistent/{case_id}", "host": host}
        elif dst == "running":
            changes = {"task_id": task_id}
        store.commit_transition(case_id, src, dst, trigger, now, changes, take_slot=take)
        if dst == until:
            return case_id
    store.commit_transition(case_id, "running", "success", "complete", now,
                            {"results_fetched": 1, "wrapup": 0}, release_slot=True,
                            detail="exit code 0")
    return case_id
