"""A real pueue daemon for a test: `pueued -c CONFIG` of pueue 3.4.1 or 4.0.4, as a child process.

The binaries are built by .ci/system-deps (`cargo install pueue --version V --root
/opt/pueue-V`); without them the fixture fails, it does not skip.

    daemon = PueueDaemon(tmp_path / "pueue", "4.0.4").start()
    daemon.client          # a `pueue` bound to this daemon's config: backend.pueue, or a PATH
    daemon.run("status", "--json")
    daemon.kill()          # SIGKILL: the tasks' processes go on (own process groups)
    daemon.start()         # the same directories: pueued restores its state file
    daemon.close()         # SIGTERM (pueued kills its tasks), then every process it left

Each daemon has its own pueue_directory (under `root`), and its runtime directory and socket in a
short folder of /tmp of its own (a unix socket path must be under 108 bytes; pytest's temp paths
can be longer). It is waited for until `pueue status` answers. The client wrapper
(`root/bin/pueue`) runs the same version's `pueue -c CONFIG`; with `kill_before_add()` it
SIGKILLs the daemon right before the next `pueue add` reaches it (a daemon that dies between
caseflow's status query and its add), with `kill_after_add(pid)` it SIGKILLs that process (caseflow)
right after the add.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

VERSIONS = ("3.4.1", "4.0.4")
DEADLINE = 60.0

# How long each start took until the socket answered (seconds), per version: in the summary.
START_TIMES: dict[str, list[float]] = {}

CLIENT = """#!/bin/sh
# pueue {version}, bound to the test daemon's config. Two switches for fault tests:
#   kill-before-add         SIGKILL pueued right before an add reaches it
#   kill-after-add (a pid)  SIGKILL that process right after a successful add
if [ "$1" = add ] && [ -e {hooks}/kill-before-add ]; then
  rm -f {hooks}/kill-before-add
  pid=$(cat {pid})
  kill -9 "$pid"
  # until it is gone (a zombie: the test reaps it), so the add finds no daemon
  while [ -e "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do
    sleep 0.01
  done
fi
if [ "$1" = add ] && [ -e {hooks}/kill-after-add ]; then
  {binary} -c {config} "$@"; rc=$?
  if [ "$rc" = 0 ]; then kill -9 "$(cat {hooks}/kill-after-add)"; rm -f {hooks}/kill-after-add; fi
  exit "$rc"
fi
exec {binary} -c {config} "$@"
"""


def binary(version: str, name: str = "pueue") -> Path:
    path = Path(f"/opt/pueue-{version}/bin/{name}")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: run `bash .ci/system-deps` as root (it builds "
                           f"pueue {version} with cargo)")
    return path


def _sessions_members(sids: set[int]) -> list[int]:
    """Every live process whose session is one of `sids`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[3]) in sids:
            found.append(int(entry))
    return found


class PueueDaemon:
    def __init__(self, root: Path, version: str = "4.0.4"):
        self.root = Path(root)
        self.version = version
        self.pueued = binary(version, "pueued")
        self.pueue = binary(version, "pueue")
        self.directory = self.root / "data"          # pueue_directory: state, task logs
        self.runtime = Path(tempfile.mkdtemp(prefix="pq-", dir="/tmp"))  # socket, pid file
        self.socket = self.runtime / "sock"
        self.config = self.root / "pueue.yml"
        self.bin = self.root / "bin"
        self.client = self.bin / "pueue"
        self.log = self.root / "pueued.log"
        self.proc: subprocess.Popen | None = None
        self._sessions: set[int] = set()            # each start is a session of its own
        for d in (self.root, self.directory, self.bin):
            d.mkdir(parents=True, exist_ok=True)
        # shared: the daemon's paths; daemon: pueue's defaults (sh -c, no callback)
        self.config.write_text(
            "shared:\n"
            f"  pueue_directory: {json.dumps(str(self.directory))}\n"
            f"  runtime_directory: {json.dumps(str(self.runtime))}\n"
            f"  unix_socket_path: {json.dumps(str(self.socket))}\n"
            "  use_unix_socket: true\n")
        q = shlex.quote
        self.client.write_text(CLIENT.format(
            version=version, hooks=q(str(self.root)),
            pid=q(str(self.runtime / "pueue.pid")), binary=q(str(self.pueue)),
            config=q(str(self.config))))
        self.client.chmod(0o755)

    # -- the daemon ----------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "PueueDaemon":
        assert not self.running, "pueued already runs"
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
        self.proc = subprocess.Popen([str(self.pueued), "-c", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self._sessions.add(self.proc.pid)
        deadline = started + DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pueued {self.version} exited with {self.proc.returncode}:"
                                   f"\n{self.log.read_text(errors='replace')[-2000:]}")
            if self.socket.exists() and self.run("status", "--json").returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"pueued {self.version} did not answer within {DEADLINE} s")
            time.sleep(0.005)
        START_TIMES.setdefault(self.version, []).append(time.monotonic() - started)
        return self

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: pueued kills its tasks and exits."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: pueued dies at once; its tasks' processes go on."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def kill_before_add(self) -> None:
        """SIGKILL the daemon right before the next `pueue add` of the client reaches it."""
        (self.root / "kill-before-add").touch()

    def kill_after_add(self, pid: int) -> None:
        """SIGKILL process `pid` (e.g. caseflow) right after the next successful `pueue add`."""
        (self.root / "kill-after-add").write_text(str(pid))

    def reap(self) -> None:
        """Collect a daemon that the client wrapper killed (kill_before_add)."""
        if self.proc is not None and self.proc.poll() is not None:
            self.proc = None

    def close(self) -> None:
        self.reap()
        self.stop()
        for pid in _sessions_members(self._sessions):  # tasks of a daemon killed with -9
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.runtime, ignore_errors=True)

    # -- the client ------------------------------------------------------------------------
    def run(self, *args: str, env: dict | None = None, check: bool = False,
            timeout: float = DEADLINE) -> subprocess.CompletedProcess:
        full = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
        res = subprocess.run([str(self.pueue), "-c", str(self.config), *args],
                             env={**full, **(env or {})}, capture_output=True, text=True,
                             timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"pueue {' '.join(args)} exited {res.returncode}: "
                                 f"{res.stdout}{res.stderr}")
        return res

    def status(self) -> dict:
        return json.loads(self.run("status", "--json", check=True).stdout)

    def tasks(self) -> dict:
        return self.status()["tasks"]

    def groups(self) -> dict:
        return self.status()["groups"]

    def task_processes(self) -> list[int]:
        """The live processes that tasks of this daemon (of any of its starts) left running."""
        daemons = self._sessions
        return [pid for pid in _sessions_members(self._sessions) if pid not in daemons]


def status_name(task: dict) -> str:
    """A task's status name in either encoding (3.x "Running", 4.x {"Running": {...}})."""
    st = task["status"]
    return st if isinstance(st, str) else next(iter(st))


def result_of(task: dict):
    """The result of a Done task in either encoding ("Success", {"Failed": 3}, ...)."""
    done = task["status"]["Done"]
    return done["result"] if isinstance(done, dict) and "result" in done else done


def summary(terminalreporter) -> None:
    """The pueued start-up times of the run (only when one was started)."""
    for version, times in sorted(START_TIMES.items()):
        times = sorted(times)
        terminalreporter.write_line(
            f"pueued {version}: {len(times)} starts until its socket answered, median "
            f"{times[len(times) // 2] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms")
