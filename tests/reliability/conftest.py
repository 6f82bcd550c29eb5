"""Shared by the reliability suites: a GPU host (real sshd, a real pueued, a relay to cut it
off) reached over `ssh` or `openssh`, and `caseflow run` as a real process that can be
killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_host import CRASH_HOSTS, HOSTS, GpuHost, host_id  # noqa: F401 (the suites' imports)
from harness import DEADLINE, wait_for

# The job of the reliability suites: checks that its case arrived whole (every file listed in
# inputs.sha256 with its checksum), records its start, works a little, writes a result.
#   exit_code  exit with this code;  work  seconds to work (default 0.3)
JOB = r"""
echo "$CASEFLOW_CASE_ID $(date +%s.%N)" >> "{ctl}/starts"
if ! sha256sum --quiet -c inputs.sha256 > /dev/null 2>&1; then
  echo "$CASEFLOW_CASE_ID" >> "{ctl}/partial"; exit 99
fi
sleep "$(cat work 2>/dev/null || echo 0.3)"
mkdir -p output && echo "result of $CASEFLOW_CASE_ID" > output/result.txt
if [ -e exit_code ]; then exit "$(cat exit_code)"; fi
"""


@pytest.fixture(params=HOSTS, ids=host_id)
def gpu_host(ws, request):
    kind, version = request.param
    host = GpuHost(ws.root, version, kind=kind)
    yield host
    host.close()


def write_case(folder: Path, files: dict) -> Path:
    """A case folder with its files and inputs.sha256 listing them (the job checks it)."""
    import hashlib
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for rel, content in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        data = content if isinstance(content, bytes) else content.encode()
        p.write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {rel}")
    (folder / "inputs.sha256").write_text("\n".join(lines) + "\n")
    return folder


class Daemon:
    """`caseflow run` as a real process, its stderr in a log file of its own; `prefix` runs
    it through a wrapper (e.g. setpriv)."""

    def __init__(self, ws, prefix: tuple[str, ...] = ()):
        self.ws = ws
        self.log = ws.root / f"daemon-{len(list(ws.root.glob('daemon-*.log'))):03d}.log"
        self.p = subprocess.Popen([*prefix, sys.executable, "-m", "caseflow.cli", "run", "-c",
                                   str(ws.config_path)], stdout=subprocess.DEVNULL,
                                  stderr=open(self.log, "wb"), start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_running(self) -> None:
        wait_for(lambda: "caseflow running" in self.text() or self.p.poll() is not None,
                 what="the daemon to start")
        assert self.p.poll() is None, f"the daemon exited at start:\n{self.text()[-3000:]}"

    def kill(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=DEADLINE)

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        return self.p.wait(timeout=DEADLINE)


@pytest.fixture
def daemons(ws):
    """Starts daemons (on `ws`, or on the workspace given); kills what is left at the end,
    also when the test fails half-way."""
    started: list[Daemon] = []

    def start(workspace=None, prefix: tuple[str, ...] = ()) -> Daemon:
        d = Daemon(workspace or ws, prefix)
        started.append(d)
        return d
    yield start
    for d in started:
        d.kill()
