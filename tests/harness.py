"""A test workspace: a real inbox, a real SQLite file, a local "remote" folder, a real daemon.

Everything waits on conditions with generous deadlines; nothing sleeps a fixed time
to let something happen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from caseflow.config import load_config
from caseflow.daemon import Daemon
from caseflow.store import Store

DEADLINE = 60.0  # seconds; generous for a loaded 2-core machine

# The test job. A case steers it with files of its own:
#   hold       wait until <ctl>/release-<content of hold> exists
#   exit_code  exit with this code
#   write_bytes  write a result file output/big.bin of this many bytes
#   stop_seconds on SIGTERM, take this long to stop (a checkpoint), then exit 143
# It notes when it started and stopped (seconds of /proc/uptime) in <ctl>/<name>.started and
# <ctl>/<name>.stopped.
JOB = r"""
echo "job of case $CASEFLOW_CASE_ID started"
cut -d ' ' -f 1 /proc/uptime > "{ctl}/$CASEFLOW_CASE_NAME.started"
if [ -e stop_seconds ]; then
  trap 'sleep "$(cat stop_seconds)"; cut -d " " -f 1 /proc/uptime > "{ctl}/$CASEFLOW_CASE_NAME.stopped"; exit 143' TERM
fi
env | grep '^CASEFLOW_\|^CUDA_VISIBLE_DEVICES' | sort > job_env.txt
if [ -e hold ]; then
  while [ ! -e "{ctl}/release-$(cat hold)" ]; do sleep 0.05; done
fi
mkdir -p output && echo "result of $CASEFLOW_CASE_ID" > output/result.txt
if [ -e write_bytes ]; then head -c "$(cat write_bytes)" /dev/zero > output/big.bin; fi
if [ -e exit_code ]; then exit "$(cat exit_code)"; fi
exit 0
"""


def wait_for(predicate, timeout: float = DEADLINE, interval: float = 0.05, what: str = ""):
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(interval)


def is_valid_path(spec, steps: list[tuple[str | None, str, str]]) -> bool:
    """Whether a case's history [(src, dst, trigger), ...] is a walk of the spec's machine."""
    current = None
    for src, dst, trigger in steps:
        if src != current:
            return False
        if src is None:
            if dst != spec.initial:
                return False
        elif spec.dest_of(trigger, src) != dst:
            return False
        current = dst
    return True


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed job nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Workspace:
    def __init__(self, root: Path):
        self.root = root
        self.inbox = root / "inbox"
        self.remote = root / "remote"
        self.var = root / "var"
        self.ctl = root / "ctl"
        for d in (self.inbox, self.remote, self.var, self.ctl):
            d.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "caseflow.yaml"
        self.settings = {
            "inbox": "inbox",
            "database": "var/caseflow.db",
            "tick_seconds": 0.2,
            "poll_seconds": 0.2,
            "workers": 2,
            "shutdown_grace_seconds": 10,
            "stability": {"quiet_seconds": 0.5, "rescan_seconds": 5},
            "groups": {"gpu_a": {"slots": 2, "devices": [0, 1]}, "gpu_b": {"slots": 1}},
            "transport": {"kind": "local", "root": "remote"},
            "backend": {"kind": "direct", "command": JOB.replace("{ctl}", str(self.ctl))},
            "retry": {"initial_seconds": 0.2, "max_seconds": 1},
            "log": {"level": "DEBUG"},
        }
        self.write_config()
        self.daemon: Daemon | None = None
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._ticks = 0

    # -- configuration -----------------------------------------------------------------
    def write_config(self, **changes) -> Path:
        self.settings.update(changes)
        self.config_path.write_text(yaml.safe_dump(self.settings, sort_keys=False))
        return self.config_path

    def config(self):
        return load_config(self.config_path)

    @property
    def database(self) -> Path:
        return self.root / self.settings["database"]

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.database)
        return self._store

    # -- cases -------------------------------------------------------------------------
    def make_case(self, name: str, files: dict | None = None, where: Path | None = None,
                  group: str | None = None, exit_code: int | None = None,
                  hold: str | None = None, priority: int | None = None,
                  write_bytes: int | None = None) -> Path:
        """Write a case folder (by default somewhere outside the inbox) and return its path."""
        folder = (where or self.root / "staging") / name
        folder.mkdir(parents=True, exist_ok=True)
        files = dict(files or {"data.bin": b"x" * 1000, "sub/more.txt": "more"})
        if group or priority is not None:
            files["case.yaml"] = (f"group: {group}\n" if group else "") + \
                (f"priority: {priority}\n" if priority is not None else "")
        if write_bytes is not None:
            files["write_bytes"] = str(write_bytes)
        if exit_code is not None:
            files["exit_code"] = str(exit_code)
        if hold is not None:
            files["hold"] = hold
        for rel, content in files.items():
            p = folder / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)
        return folder

    def drop_case(self, name: str, **kwargs) -> Path:
        """Create a case outside the inbox and move it in at once (like a finished copy)."""
        src = self.make_case(name, **kwargs)
        dest = self.inbox / name
        os.rename(src, dest)
        return dest

    def release(self, token: str) -> None:
        (self.ctl / f"release-{token}").touch()

    def cases(self, name: str | None = None):
        rows = self.store.cases()
        return [r for r in rows if name is None or r.name == name]

    def case(self, name: str):
        rows = self.cases(name)
        return rows[-1] if rows else None

    def wait_state(self, name: str, *states: str, timeout: float = DEADLINE):
        def check():
            row = self.case(name)
            return row if row is not None and row.state in states else None
        try:
            return wait_for(check, timeout, what=f"case {name!r} to reach {states}")
        except AssertionError:
            row = self.case(name)
            raise AssertionError(f"case {name!r} did not reach {states} within {timeout:.0f} s; "
                                 f"it is {row.state if row else 'unknown'}"
                                 f"{' (' + str(row.reason or row.last_error) + ')' if row else ''}")

    def wait_state_of(self, case_id: int, *states: str, timeout: float = DEADLINE):
        """Wait for the case with this id (several cases may share a name)."""
        def check():
            row = self.store.get(case_id)
            return row if row is not None and row.state in states else None
        return wait_for(check, timeout, what=f"case {case_id} to reach {states}")

    def history(self, name: str):
        return [(h.src, h.dst, h.trigger) for h in self.store.history(self.case(name).id)]

    # -- the daemon, in this process -----------------------------------------------------
    def start(self) -> Daemon:
        assert self.daemon is None, "daemon already started"
        self.daemon = Daemon(self.config())
        self._count_ticks(self.daemon.engine)
        self._thread = threading.Thread(target=self.daemon.run, name="test-daemon", daemon=True)
        self._thread.start()
        wait_for(lambda: self.daemon.ready.is_set() or not self._thread.is_alive(),
                 what="the daemon to start")
        assert self._thread.is_alive(), "the daemon stopped during start"
        return self.daemon

    def _count_ticks(self, engine) -> None:
        tick = engine.tick

        def counted():
            try:
                return tick()
            finally:
                self._ticks += 1
        engine.tick = counted

    @property
    def ticks(self) -> int:
        """How many ticks the daemons of this workspace have run so far."""
        return self._ticks

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.request_stop()
            self._thread.join(timeout=DEADLINE)
            assert not self._thread.is_alive(), "the daemon did not stop"
            self.daemon = None
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.kill_jobs()
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- the jobs, on the "remote" side --------------------------------------------------
    def remote_folder(self, name: str) -> Path:
        row = self.case(name)
        assert row is not None and row.remote_path, f"case {name!r} has no remote folder yet"
        return Path(row.remote_path)

    def job_pid(self, name: str) -> int:
        """The pid of the case's job (its session and process group leader)."""
        pid_file = self.remote_folder(name) / ".caseflow" / "pid"
        text = wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(),
                        what=f"the pid file of {name!r}")
        return int(text)

    def kill_jobs(self) -> None:
        """Kill every job still running under the remote root (cleanup after a test)."""
        for pid_file in [*self.remote.glob("*/.caseflow/pid"),
                         *self.remote.glob("*/*/.caseflow/pid")]:  # several hosts: one root each
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            if process_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    # -- the command line, as a real process ---------------------------------------------
    def cli(self, *args: str, timeout: float = DEADLINE, check: bool = False,
            env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, **(env or {})}
        cmd = [sys.executable, "-m", "caseflow.cli", *args]
        if args and args[0] not in ("diagram", "init", "files", "help") and "-c" not in args:
            cmd += ["-c", str(self.config_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
        if check and proc.returncode != 0:
            raise AssertionError(f"caseflow {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc


class RunningCommand:
    """A `caseflow` command that goes on (`caseflow logs -f`), as a real process; what it has
    printed so far, read as it comes."""

    def __init__(self, config: Path, *args: str):
        # Ctrl-C as in a terminal: a CI that starts the suite in the background (a shell's
        # `&`) hands it SIGINT ignored, and Python then never raises KeyboardInterrupt (the
        # rotated-log test's Ctrl-C was not heard in such a full run)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "caseflow.cli", "-c", str(config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self._out, self._err = bytearray(), bytearray()
        self._threads = [threading.Thread(target=self._pump, args=(f, buf), daemon=True)
                         for f, buf in ((self.proc.stdout, self._out),
                                        (self.proc.stderr, self._err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(f, buf: bytearray) -> None:
        while chunk := os.read(f.fileno(), 65536):
            buf += chunk

    @property
    def out(self) -> str:
        return bytes(self._out).decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return bytes(self._err).decode("utf-8", "replace")

    def wait_out(self, text: str) -> None:
        """Until `text` is on its stdout (it failing to come, with what it printed)."""
        wait_for(lambda: text in self.out or self.proc.poll() is not None, what=repr(text))
        assert text in self.out, f"{text!r} not printed; stdout:\n{self.out}\nstderr:\n{self.err}"

    def wait_err(self, text: str) -> None:
        wait_for(lambda: text in self.err or self.proc.poll() is not None, what=repr(text))
        assert text in self.err, f"{text!r} not said; stdout:\n{self.out}\nstderr:\n{self.err}"

    def end(self) -> int:
        """Its exit code, once it has ended by itself (killed after DEADLINE)."""
        try:
            rc = self.proc.wait(DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for t in self._threads:
                t.join(DEADLINE)
        return rc
