"""A model-based test of the whole engine: random interleavings of inbox events, operator
requests and faults, checked against ground truth after every step.

Hypothesis (`RuleBasedStateMachine`) drives the REAL engine, tick by tick, in this process:
a real SQLite store, real inbox folders, the `local` transport and the `direct` runner, whose
jobs are real detached processes. What is checked is never what caseflow says about itself
alone, but what really happened:

- the job (`backend.command`, the shell script JOB below) appends one line per event to a
  ledger outside the remote root (<example>/ledger/<case id>.log, a single `>>` write each):
  START (case, run, GPU group and slot, pid, process start time), INPUTS (a digest of the
  files it found in its working folder), TERM, END (its exit code); a child it leaves behind
  writes CHILD-START / CHILD-END. Times are /proc/uptime, which the shell reads with a
  builtin and Python reads alike (the test steps the engine's wall clock, not that one);
- /proc says which of those processes still live (a SIGKILLed one writes no END);
- the test keeps its own model of every copy of every inbox folder (the files of each
  version, their digests), of the requests it made and of the faults it injected;
- the store (cases, their history, the slots) is read only to compare it with the above.

The promises checked (docs/guarantees.md):
1. a GPU slot never runs two jobs at once: two live job processes (main or child) of
   different runs never share a (group, slot); a live job process's slot is held by its case
   (the slot of an ended case goes to the next one only once its job is gone); at the end, no
   two processes' lifetimes overlapped on one slot;
2. every case ends exactly once with its results: its history is a walk of
   specs/case_machine.yaml; each (case, run) starts at most one job; a run the engine says
   ended with an exit code (or was lost by the queue) did start its job, and the exit code is
   the job's; a success brings home that run's results and nothing else; every copy of an
   inbox folder is one case;
3. `retry` runs the case again on its inputs as they are when the retry is asked: the
   retried run's job sees the folder's digest of that moment (or a later edit's);
4. a job the infrastructure took away (`reboot`: every job's processes SIGKILLed, the boot id
   changed, pueued restarted) runs again by itself, as a new run: only such a run is rerun,
   at most `retry.infrastructure_reruns` times between two retries; an untouched case that
   was only rerun ends in success, or in failure saying it was lost too often;
5. `caseflow prune` removes only cases that have ended for good (wrap-up done, no request,
   no slot, no process of their job alive), never the case of a folder still in the inbox,
   and removes all of each (its history too); a pruned case's copy never becomes a case
   again (the checks above count pruned cases as the test saw them last);
and a stop sends each process of a job TERM once (its handler writing a checkpoint is not cut
short by a second one): no process records two TERMs or two ENDs.

Two profiles:
- local (`test_model_based`): the `local` transport and the `direct` runner, fast;
- remote (`test_model_based_remote[...]`), slower: the same rules and checks over the real
  sshd, with paramiko (`ssh`) or OpenSSH's client through a master connection behind a
  one-time code (`openssh`), to a real pueued 3.4.1 / 4.0.4 or the direct runner (the "remote"
  host is this machine: the ledger and /proc are the same ground truth). One more fault:
  `lose_connection`, every connection cut by the relay in front of sshd, or the openssh master
  SIGKILLed; over openssh the host then waits for a person's `login` (a rule too).

Run it (CI profile: a few examples of a few dozen steps):

    PYTHONPATH=engine:tests .venv/bin/python -m pytest tests/test_model_based.py -p no:cacheprovider

Environment:
    CASEFLOW_MODEL_EXAMPLES  examples of the local profile (default 6)
    CASEFLOW_MODEL_STEPS     steps per example (default 30); a soak: e.g. 400 x 30 = 12,000
    CASEFLOW_MODEL_REMOTE_EXAMPLES / _REMOTE_STEPS  the remote profile, per host (3 x 25)
    CASEFLOW_MODEL_SEED      the seed (else a random one, printed; pytest's --hypothesis-seed
                             wins over both)
    CASEFLOW_MODEL_DB        a folder for Hypothesis' example database (default: none)
    CASEFLOW_MODEL_WITHOUT   comma-separated features to leave out, to look at one thing at a
                             time: child, term, hold, clock_step, lost_reply, remote_down,
                             restart, retry, cancel, replace, delete, edit, copy_in_pieces,
                             prune, reboot, cut (the remote profile's lose_connection)
    CASEFLOW_MODEL_KEEP=1    keep each example's folder (printed) instead of removing it

A failure prints the shrunk sequence of steps (`state.drop_case(...)`, `state.run_until(...)`,
...) and a `@reproduce_failure` blob to replay exactly that example.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import random
import re
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, settings
from hypothesis import core as hypothesis_core
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    precondition,
    rule,
    run_state_machine_as_test,
)

from caseflow import prune as pruning
from caseflow.core.engine import Engine
from caseflow.core.machine import CaseMachine
from caseflow.errors import HOST_PROBLEM_KINDS, QUEUE_DOWN, UNREACHABLE, TransientError
from caseflow.spec import load_spec
from caseflow.transports import make_transport
from gpu_host import GpuHost, GridEngineHost
from harness import Workspace

# -- settings ------------------------------------------------------------------------------
EXAMPLES = int(os.environ.get("CASEFLOW_MODEL_EXAMPLES", "6"))
STEPS = int(os.environ.get("CASEFLOW_MODEL_STEPS", "30"))
REMOTE_EXAMPLES = int(os.environ.get("CASEFLOW_MODEL_REMOTE_EXAMPLES", "3"))
REMOTE_STEPS = int(os.environ.get("CASEFLOW_MODEL_REMOTE_STEPS", "25"))
SEED = os.environ.get("CASEFLOW_MODEL_SEED")
WITHOUT = {w.strip() for w in os.environ.get("CASEFLOW_MODEL_WITHOUT", "").split(",") if w.strip()}
KEEP = os.environ.get("CASEFLOW_MODEL_KEEP") == "1"
TRACE = os.environ.get("CASEFLOW_MODEL_TRACE") == "1"  # each step and the cases after it

QUIET = 0.3  # stability.quiet_seconds
TICK_SLEEP = 0.03  # real time between two ticks: the jobs are real processes
RUN_UNTIL = 2.5  # seconds a `run_until` step ticks at most
DRAIN_DEADLINE = 120.0  # the end of an example: everything terminal, every job gone
KEPT_SLOT_GRACE = (4.0, 20)  # (seconds, ticks) an ended case may hold a slot after its job
START_WAIT = 1.0  # after a tick, for the jobs it launched to begin
CONFIRM = 0.3  # a live job whose slot its case does not hold: looked at again after this
MAX_FOLDERS = 5  # folder names per example
CLOCK_STEP = 60.0  # a forward step of the engine's wall clock
GROUPS = {"gpu_a": 2, "gpu_b": 1}
BUDGET = 1  # retry.infrastructure_reruns: a second loss of the same case ends it (issue 28)
GIVE_UP = 30.0  # retry.give_up_after_seconds (a clock step makes a failing streak give up)
HEALTH = 0.5  # health_seconds: a host that seems well is probed this often
# (seconds, ticks) after which the store must say what the host's queue is like: a stopped
# pueued shown, or a running one no longer (probes every HEALTH, a paused host every RETRY_MAX)
HEALTH_SHOWN = (6.0, 20)
# retry.initial_seconds / max_seconds: a step lost to a fault is tried again a few steps
# later (a step takes 0.1-0.2 s), so what happens in between does not hang on a race
RETRY_INITIAL, RETRY_MAX = 0.5, 2.0

# of this process, printed at the end; "queue_shown": checks that found a killed pueued shown
# (and a restarted one no longer), the host-health invariant at work
STATS = {"examples": 0, "steps": 0, "queue_shown": 0, "reruns": 0, "lost_too_often": 0}

ROOT = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((ROOT / "specs" / "case_machine.yaml").read_text())
TERMINAL = {s["name"] for s in SPEC["states"] if s.get("terminal")}
STATES = {s["name"] for s in SPEC["states"]}
JOB_STATES = {s["name"] for s in SPEC["states"] if s.get("job_may_run")}
INITIAL = SPEC["initial"]


def _roles(t) -> list[str]:
    role = t.get("role", [])
    return [role] if isinstance(role, str) else list(role)


def _sources(t) -> list[str]:
    src = t["source"]
    return [src] if isinstance(src, str) else list(src)


MOVES = {(src, t["trigger"], t["dest"]) for t in SPEC["transitions"] for src in _sources(t)}
LOST = {t["trigger"] for t in SPEC["transitions"] if "job_lost" in _roles(t)}
RERUN = {t["trigger"] for t in SPEC["transitions"] if "job_rerun" in _roles(t)}
RETRY, CANCEL = "retry", "cancel"  # the operator's requests (`caseflow retry` / `cancel`)

# -- the job: ground truth in a ledger -------------------------------------------------------
# Control files in the case folder steer it: exit_code; hold (wait for <ctl>/release-<token>);
# work (0.05 s steps of work); term (on SIGTERM, go on for that many 0.05 s steps, then
# exit 143); child (leave a child in the job's process group that lives that many 0.05 s
# steps after the job's end). Every line is one printf appended with >> (one write).
JOB = r"""
L={ledger}/${CASEFLOW_CASE_ID:-unknown}.log
RUN=${CASEFLOW_RUN:-?} G=${CASEFLOW_GPU_GROUP:-?} S=${CASEFLOW_GPU_SLOT:-?} ME=$$
{ read -r s < "/proc/$ME/stat"; s=${s##*) }; set -- $s; ST=${20}; }
rec() {
  read -r up _ < /proc/uptime
  printf '%s %s case=%s run=%s group=%s slot=%s pid=%s st=%s %s\n' "$up" "$1" \
    "$CASEFLOW_CASE_ID" "$RUN" "$G" "$S" "$ME" "$ST" "$2" >> "$L"
}
finish() { rec END "code=$1"; exit "$1"; }
TERMED=0 IGN=0
if [ -s term ]; then
  read -r IGN < term
  trap 'TERMED=1; rec TERM ignored' TERM
else
  trap 'finish 143' TERM
fi
rec START kind=main
D=$(find . \( -path ./.caseflow -o -path ./output \) -prune -o -type f -print0 |
    LC_ALL=C sort -z | xargs -0 -r sha256sum | sha256sum)
rec INPUTS "digest=${D%% *}"
if [ -s child ]; then
  read -r CH < child
  sh -c '
    L=$1 MAIN=$2 MAINST=$3 N=$4 C=$5 RUN=$6 G=$7 S=$8 ME=$$
    { read -r s < "/proc/$ME/stat"; s=${s##*) }; set -- $s; ST=${20}; }
    rec() {
      read -r up _ < /proc/uptime
      printf "%s %s case=%s run=%s group=%s slot=%s pid=%s st=%s %s\n" "$up" "$1" \
        "$C" "$RUN" "$G" "$S" "$ME" "$ST" "$2" >> "$L"
    }
    trap "rec CHILD-END code=143; exit 143" TERM
    rec CHILD-START kind=child
    alive() {
      { read -r s < "/proc/$MAIN/stat"; } 2>/dev/null || return 1
      s=${s##*) }; set -- $s
      [ "$1" != Z ] && [ "$1" != X ] && [ "${20}" = "$MAINST" ]
    }
    while alive; do sleep 0.05; done
    i=0; while [ "$i" -lt "$N" ]; do sleep 0.05; i=$((i + 1)); done
    rec CHILD-END code=0
  ' model-child "$L" "$ME" "$ST" "$CH" "$CASEFLOW_CASE_ID" "$RUN" "$G" "$S" &
fi
if [ -s hold ]; then
  read -r TOKEN < hold
  while [ ! -e "{ctl}/release-$TOKEN" ] && [ "$TERMED" = 0 ]; do sleep 0.05; done
fi
W=0; [ -s work ] && read -r W < work
i=0; while [ "$i" -lt "$W" ] && [ "$TERMED" = 0 ]; do sleep 0.05; i=$((i + 1)); done
if [ "$TERMED" = 1 ]; then
  i=0; while [ "$i" -lt "$IGN" ]; do sleep 0.05; i=$((i + 1)); done
  finish 143
fi
CODE=0; [ -s exit_code ] && read -r CODE < exit_code
if [ "$CODE" = 0 ]; then
  mkdir -p output && printf 'case %s run %s\n' "$CASEFLOW_CASE_ID" "$RUN" > output/result.txt
fi
finish "$CODE"
"""
RESULT_RE = re.compile(r"case (\d+) run (\S+)\n\Z")
EARLIER_RUN = re.compile(r"(.+)\.run-(\d+)(?:-(\d+))?(?:-\d+)?\Z")  # an earlier run's, kept
RESULT_FILES = re.compile(r"(caseflow-job\.log|caseflow-job-run\d+\.log|output/result\.txt)\Z")


# -- processes and time ---------------------------------------------------------------------
def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int, start: str) -> bool:
    """The process that wrote `start` as its start time lives (a zombie does not)."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X") and fields[19] == start


def digest_of(files: dict[str, bytes]) -> str:
    """What the job computes: sha256sum of each file, sorted by path, hashed again."""
    lines = "".join(
        f"{hashlib.sha256(data).hexdigest()}  ./{rel}\n"
        for rel, data in sorted(files.items(), key=lambda kv: ("./" + kv[0]).encode())
    )
    return hashlib.sha256(lines.encode()).hexdigest()


def read_tree(folder: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            full = Path(dirpath) / name
            out[full.relative_to(folder).as_posix()] = full.read_bytes()
    return out


def inode_of(path: Path) -> str:
    st_ = os.stat(path)
    return f"{st_.st_dev}:{st_.st_ino}"


def noise(seed_text: str, size: int) -> bytes:
    return hashlib.shake_256(seed_text.encode()).digest(size)


# -- the engine's clock and the remote side's faults ---------------------------------------
class Clock:
    """The engine's clock: its wall face can be stepped forward, its monotonic face not."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class Faults:
    lose: int = 0  # the next N commands run, then their reply is lost
    lose_only_once: bool = False  # ... only of commands that must not run twice (submits)
    down: int = 0  # the next N remote calls fail before anything happens
    injected: list = field(default_factory=list)
    failed_at: float = float("-inf")  # monotonic time of the last call failed on purpose

    def clear(self) -> None:
        self.lose = self.down = 0


def what(argv) -> str:
    """A remote command, as a person reads it (a script by its $0, e.g. caseflow-launch)."""
    argv = [str(a) for a in argv]
    if argv[:2] == ["sh", "-c"] and len(argv) > 3:
        case = next((a.split("=", 1)[1] for a in argv if a.startswith("CASEFLOW_CASE_ID=")), "")
        return argv[3] + (f" of case {case}" if case else "")
    return " ".join(argv[:3])


class Faulty:
    """The remote side's faults at the boundary of the host's real transport (local, ssh or
    openssh): its `run`, `run_once` and `upload_dir` are replaced on the object itself by
    these (`faulty`), which call the originals; and each job learns its run (CASEFLOW_RUN,
    added to the launch's environment when caseflow does not set it)."""

    def __init__(self, transport, faults: Faults, run_of):
        self.faults = faults
        self.run_of = run_of
        self.inside = False
        self.originals = {n: getattr(transport, n) for n in ("run", "run_once", "upload_dir")}

    def _with_run(self, argv):
        argv = list(argv)
        if "env" not in argv or any(str(a).startswith("CASEFLOW_RUN=") for a in argv):
            return argv
        ids = [str(a).split("=", 1)[1] for a in argv if str(a).startswith("CASEFLOW_CASE_ID=")]
        if ids and ids[0].isdigit():
            argv.insert(argv.index("env") + 1, f"CASEFLOW_RUN={self.run_of(int(ids[0]))}")
        return argv

    def _call(self, name: str, argv, args, kwargs, once: bool):
        fn = self.originals[name]
        if self.inside:  # run_once that calls run: one remote command, one fault
            return fn(argv, *args, **kwargs)
        self.inside = True
        try:
            f = self.faults
            if f.down > 0:
                f.down -= 1
                f.failed_at = time.monotonic()
                f.injected.append(f"failed before it ran: {what(argv)}")
                raise TransientError("the remote side is briefly failing (injected)")
            res = fn(self._with_run(argv), *args, **kwargs)
            if f.lose > 0 and (once or not f.lose_only_once):
                f.lose -= 1
                f.injected.append(f"reply lost: {what(argv)}")
                raise TransientError("reply lost (injected): the command ran")
            return res
        finally:
            self.inside = False

    def run(self, argv, *args, **kwargs):
        return self._call("run", argv, args, kwargs, once=False)

    def run_once(self, argv, *args, **kwargs):
        return self._call("run_once", argv, args, kwargs, once=True)

    def upload_dir(self, local_dir, remote_path, manifest, progress=None):
        if self.faults.down > 0:
            self.faults.down -= 1
            self.faults.failed_at = time.monotonic()
            self.faults.injected.append(f"failed before it ran: upload of {Path(local_dir).name}")
            raise TransientError("the remote side is briefly failing (injected)")
        self.inside = True  # the upload's own commands: one call, one fault
        try:
            return self.originals["upload_dir"](local_dir, remote_path, manifest, progress=progress)
        finally:
            self.inside = False


def faulty(transport, faults: Faults, run_of):
    """The transport, its remote calls going through `Faulty` first."""
    f = Faulty(transport, faults, run_of)
    transport.run, transport.run_once, transport.upload_dir = f.run, f.run_once, f.upload_dir
    return transport


# -- what the test puts in the inbox ----------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """How a case's job behaves (control files in its folder)."""

    group: str = "gpu_b"
    exit: int = 0
    hold: bool = False  # waits until released (`release_job`)
    term_s: int = 0  # on SIGTERM, runs on this many seconds
    child_s: int = 0  # leaves a child living this many seconds after the job's end
    work_s: float = 0.2
    data: int = 1000  # bytes of data.bin

    def files(self, name: str, no: int, variant: str) -> dict[str, bytes]:
        files = {
            "case.yaml": f"group: {self.group}\n".encode(),
            "copy.id": f"{name}.{no:04d}\n".encode(),
            "exit_code": str(self.exit).encode(),
            "work": str(round(self.work_s / 0.05)).encode(),
            "data.bin": noise(f"{name}/{variant}/data", self.data),
            "sub/more.txt": noise(f"{name}/{variant}/more", 48).hex().encode(),
        }
        if self.hold:
            files["hold"] = f"{name}.{no}".encode()
        if self.term_s:
            files["term"] = str(self.term_s * 20).encode()
        if self.child_s:
            files["child"] = str(self.child_s * 20).encode()
        return files


def on(feature: str) -> bool:
    return feature not in WITHOUT


def jobs() -> st.SearchStrategy[Job]:
    return st.builds(
        Job,
        group=st.sampled_from(["gpu_b", "gpu_a"]),
        exit=st.sampled_from([0, 3]),
        hold=st.booleans() if on("hold") else st.just(False),
        term_s=st.sampled_from([0, 1, 2]) if on("term") else st.just(0),
        child_s=st.sampled_from([0, 1]) if on("child") else st.just(0),
        work_s=st.sampled_from([0.3, 2.0]),
        data=st.sampled_from([1000, 3000]),
    )


@dataclass
class Copy:
    """One copy of a folder in the inbox: a new copy under an old name is its own case."""

    key: str  # name#no
    name: str
    no: int
    job: Job
    target: dict[str, bytes]  # what the copy holds once complete
    pieces: list[list[str]]  # the files still to write, piece by piece
    path: Path
    inode: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # what it holds now
    versions: list[str] = field(default_factory=list)  # digests once complete, then edits
    removed: bool = False
    edited: bool = False
    exempt: bool = False  # a clock step while it waited: a give-up is not its fault

    @property
    def complete(self) -> bool:
        return not self.pieces

    def digest(self) -> str:
        return digest_of(self.files)


class Heartbeat(threading.Thread):
    """A copy in progress keeps changing, as a real copy does (the copying program writes all
    the time): its folder is touched every 50 ms until its last piece is written."""

    def __init__(self):
        super().__init__(name="model-copier", daemon=True)
        self.lock = threading.Lock()
        self.paths: set[Path] = set()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.05):
            with self.lock:
                for p in list(self.paths):
                    try:
                        os.utime(p)
                    except OSError:
                        pass


# -- the ledger -----------------------------------------------------------------------------
@dataclass
class Proc:
    pid: int
    st: str
    case: int
    run: str
    group: str
    slot: str
    kind: str  # main | child
    start: float
    end: float | None = None
    code: int | None = None
    digest: str | None = None
    dead: bool = False
    last_alive: float = 0.0
    terms: int = 0  # TERMs its handler saw (a job that goes on after TERM records each)
    ends: int = 0  # END lines: a handler run twice (a second TERM) writes two

    @property
    def run_no(self) -> int | None:
        return int(self.run) if self.run.isdigit() else None

    def definite_end(self) -> float:
        """When it was surely still there (its END, else the last time it was seen alive)."""
        if self.end is not None:
            return self.end
        return self.last_alive if self.dead else float("inf")

    def __str__(self):
        return (
            f"{self.kind} job pid {self.pid} of case {self.case} run {self.run} on "
            f"{self.group}[{self.slot}]"
        )


class Ledger:
    def __init__(self, folder: Path):
        self.folder = folder
        self.offsets: dict[Path, int] = {}
        self.procs: dict[tuple[int, str], Proc] = {}
        self.starts: dict[tuple[int, int | None], list[Proc]] = {}

    def refresh(self) -> None:
        for path in sorted(self.folder.glob("*.log")):
            with open(path, "rb") as f:
                f.seek(self.offsets.get(path, 0))
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.offsets[path] = self.offsets.get(path, 0) + end
            for line in data[:end].decode("utf-8", "replace").splitlines():
                self._line(line)

    def _line(self, line: str) -> None:
        parts = line.split()
        if len(parts) < 2:
            return
        t, event = float(parts[0]), parts[1]
        kv = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        key = (int(kv["pid"]), kv["st"])
        if event in ("START", "CHILD-START"):
            p = Proc(
                key[0],
                key[1],
                int(kv["case"]),
                kv["run"],
                kv["group"],
                kv["slot"],
                kv["kind"],
                t,
                last_alive=t,
            )
            self.procs[key] = p
            if p.kind == "main":
                self.starts.setdefault((p.case, p.run_no), []).append(p)
            return
        p = self.procs.get(key)
        if p is None:
            return
        if event == "INPUTS":
            p.digest = kv["digest"]
        elif event in ("END", "CHILD-END"):
            p.end, p.code = t, int(kv["code"])
            p.ends += 1
        elif event == "TERM":
            p.terms += 1

    def sweep(self) -> float:
        """Which processes still live, now (an uptime)."""
        now = uptime()
        for p in self.procs.values():
            if p.dead:
                continue
            if alive(p.pid, p.st):
                p.last_alive = now
            else:
                p.dead = True
        return now

    def live(self, before: float) -> list[Proc]:
        return [p for p in self.procs.values() if not p.dead and p.start < before]


class Broken(AssertionError):
    """A promise broken, as ground truth shows it (each kind is its own class: Hypothesis
    tells failures apart by type, and shrinks each to its own example)."""


class TwoJobsOnOneSlot(Broken):
    pass


class SlotFreedWhileJobRuns(Broken):
    pass


class SlotKeptAfterJob(Broken):
    pass


class NotAWalkOfTheSpec(Broken):
    pass


class JobStartedTwice(Broken):
    pass


class WrongInputs(Broken):
    pass


class EndWithoutItsJob(Broken):
    pass


class CopyNotOneCase(Broken):
    pass


class WrongResults(Broken):
    pass


class SignalledTwice(Broken):
    pass


class NotSettled(Broken):
    pass


class WorkOnDrainedHost(Broken):
    pass


class HostHealthWrong(Broken):
    pass


class RerunWrong(Broken):
    """A run was rerun that the infrastructure did not take away, or more than the budget."""


class PrunedTooSoon(Broken):
    pass


@contextlib.contextmanager
def promise(kind: type[Broken]):
    """A failed `assert` inside is a broken promise of that kind."""
    try:
        yield
    except Broken:
        raise
    except AssertionError as exc:
        raise kind(str(exc).split("\nassert ")[0]) from None


def step(ticks: bool = True):
    """A rule: the step, then (`ticks`) one tick of the daemon, which runs all along, then
    every check against ground truth (what `@invariant` would do, without a line per check
    in a failure's listing; the rules that tick check after each of their ticks too).

    Each step adds a line to the example's story: what it did (whom `nth` chose) and where
    the cases are afterwards. The first broken promise is kept and raised at the end of the
    example (teardown), with the story; the steps after it only keep the test's own model
    of the inbox up to date (no tick, no check). So every run of an example draws the same
    data however the real processes' timing makes it go, which Hypothesis needs to replay
    and shrink it. Another error (a bug in a step) is raised at once."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            self.steps += 1
            self.did = ""
            shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "data")
            if self.violation is not None:
                return fn(self, *args, **kwargs)  # the model only (see `stopped`)
            try:
                out = fn(self, *args, **kwargs)
                if ticks:
                    self.step_engine()
                else:
                    self.check()
            except Broken as exc:
                self.tell(f"{fn.__name__}({shown}){self.did}")
                self.violation = type(exc)(
                    f"{exc}\n\nThe example, step by step (cases as id:name:state after it):\n"
                    + "\n".join(self.story[-40:])
                )
                return None
            except BaseException:
                self.broken = True
                raise
            self.tell(f"{fn.__name__}({shown}){self.did}")
            if TRACE:
                print(f"  {self.story[-1]}")
            return out

        return wrapper

    return decorate


# -- the model ------------------------------------------------------------------------------
class CaseflowModel(RuleBasedStateMachine):
    """The local profile: the `local` transport and the `direct` runner. A subclass with
    HOST = (transport, backend, pueue version) is the remote profile (`remote_model`)."""

    folders = Bundle("folders")
    HOST: tuple[str, str, str] | None = None

    def __init__(self):
        super().__init__()
        self.broken = False
        self.tmp = Path(tempfile.mkdtemp(prefix="caseflow-model-"))
        self.host: GpuHost | GridEngineHost | None = None
        self.master_down = False  # openssh: the master was killed; no login yet
        self.ws = Workspace(self.tmp)
        self.ledger_dir = self.tmp / "ledger"
        self.graveyard = self.tmp / "graveyard"
        self.staging = self.tmp / "staging"
        for d in (self.ledger_dir, self.graveyard, self.staging):
            d.mkdir()
        job = self.tmp / "job.sh"
        job.write_text(
            JOB.replace("{ledger}", str(self.ledger_dir)).replace("{ctl}", str(self.ws.ctl))
        )
        transport = {"kind": "local", "root": "remote", "verify": "size"}
        self.boot_id = self.tmp / "boot_id"  # the direct runner's, in place of the kernel's
        self.boot_id.write_text("boot-0\n")
        backend = {"kind": "direct", "command": f"exec sh {job}", "boot_id_file": str(self.boot_id)}
        if self.HOST is not None:
            kind, backend["kind"], version = self.HOST
            if backend["kind"] != "direct":
                del backend["boot_id_file"]
            try:
                if backend["kind"] == "gridengine":
                    self.host = GridEngineHost(self.tmp, sum(GROUPS.values()))
                    # the test cluster writes a job's accounting record at once
                    backend.update(queue="all.q", accounting_wait_seconds=0)
                else:
                    self.host = GpuHost(self.tmp, version, kind=kind)
                transport = self.host.transport(self.ws.remote, verify="size")
            except BaseException:
                if self.host is not None:
                    self.host.close()
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise
        self.ws.write_config(
            tick_seconds=0.05,
            poll_seconds=0.05,
            workers=1,
            stability={"quiet_seconds": QUIET, "rescan_seconds": 0.01},
            health_seconds=HEALTH,
            groups={g: {"slots": n} for g, n in GROUPS.items()},
            transport=transport,
            backend=backend,
            retry={
                "initial_seconds": RETRY_INITIAL,
                "max_seconds": RETRY_MAX,
                "give_up_after_seconds": GIVE_UP,
                "infrastructure_reruns": BUDGET,
            },
            log={"level": "WARNING"},
        )
        self.config = self.ws.config()
        self.results = Path(self.config.results.folder)
        self.clock = Clock()
        self.faults = Faults()
        self.ledger = Ledger(self.ledger_dir)
        self.heartbeat = Heartbeat()
        self.heartbeat.start()
        self.machine = CaseMachine(load_spec())
        self.copies: dict[str, Copy] = {}  # key -> copy
        self.by_inode: dict[str, Copy] = {}
        self.current: dict[str, str | None] = {}  # folder name -> key of the copy there now
        self.partial: dict[str, str] = {}  # digest of a copy in progress -> what it was
        self.released: set[str] = set()
        self.retry_from: dict[tuple[int, int], tuple[str, int]] = {}  # (case, run) -> version
        self.cancelled: set[int] = set()
        self.exempt_cases: set[int] = set()
        self.ended: dict[tuple[int, int], tuple[str, int | None, str | None]] = {}
        self.kept_since: dict[int, tuple[float, int]] = {}
        self.pruned: dict[int, object] = {}  # case id -> its row when `caseflow prune` took it
        self.exported = 0  # lines in the prune's export
        # `caseflow host pause`: since when (uptime, as the ledger's), and the runs whose job
        # may start meanwhile (their submit was sent, or may have been, before the drain)
        self.drained: tuple[float, set[tuple[int, str]]] | None = None
        # pueued SIGKILLed (True) or started again (False): since when (monotonic, ticks)
        self.queue_change: tuple[bool, float, int] | None = None
        # the runs whose job a reboot of the host took away (its processes SIGKILLed), and
        # how many reboots there were
        self.rebooted: set[tuple[int, int]] = set()
        self.reboots = 0
        self.ticks = 0
        self.failed = (float("-inf"), 0)  # (when, after which tick) a call last failed on purpose
        self.steps = 0
        self.story: list[str] = []
        self.violation: Broken | None = None  # the first promise seen broken
        self.told_faults = 0
        self.faults_checked = 0  # injected faults seen by `check` (a kept slot's grace restarts)
        self.did = ""  # what the step did, for the story
        self.engine: Engine | None = None
        try:
            self.start_engine()
        except BaseException:  # the example never runs: its host's daemons are not left behind
            self.cleanup()
            raise

    # -- the daemon ------------------------------------------------------------------------
    def start_engine(self) -> None:
        host = self.config.hosts[0]
        transport = faulty(make_transport(host.transport), self.faults, self.run_of)
        self.engine = Engine(self.config, transport=transport, clock=self.clock)
        self.engine.start(workers=False)

    def run_of(self, case_id: int) -> int | str:
        row = self.engine.store.get(case_id) if self.engine else None
        return row.run if row is not None else "?"

    def step_engine(self) -> None:
        """One tick of the daemon, a little real time for the real jobs, and the checks
        (a job that outlives its slot by a second is seen, however long the step)."""
        failed_at = self.faults.failed_at
        self.engine.tick()
        self.ticks += 1
        if self.faults.failed_at != failed_at:  # a call failed on purpose in this tick
            self.failed = (self.faults.failed_at, self.ticks)
        time.sleep(TICK_SLEEP)
        self.await_starts()
        self.check()

    def await_starts(self) -> None:
        """Until each running case's job has begun (its START line: its signal handling is
        set up; then its INPUTS line), at most START_WAIT seconds: a request right after a
        submit then meets a job that behaves as it was told, not a shell still starting."""
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            self.ledger.refresh()
            started = [
                self.ledger.starts.get((r.id, r.run)) for r in self.engine.store.cases(["running"])
            ]
            if all(s and s[0].digest for s in started):
                return
            time.sleep(0.02)

    def rows(self):
        return self.engine.store.cases()

    @property
    def stopped(self) -> bool:
        """A promise was seen broken: the steps left keep only the test's model going."""
        return self.violation is not None

    def tell(self, what: str) -> None:
        cases = " ".join(f"{r.id}:{r.name}:{r.state}" for r in self.rows()) or "none"
        faults = self.faults.injected[self.told_faults :]
        self.told_faults = len(self.faults.injected)
        hit = f"  [{'; '.join(faults)}]" if faults else ""
        self.story.append(f"{len(self.story) + 1:3}. {what}  -> {cases}{hit}")

    def idle(self, rows) -> bool:
        """Nothing more can happen without a step of the test."""
        if any(r.state not in TERMINAL or r.request or r.wrapup for r in rows):
            return False
        if any(not c.complete for c in self.present()):
            return False
        known = {r.inode for r in [*rows, *self.pruned.values()]}
        if any(c.inode not in known for c in self.present()):
            return False
        self.ledger.refresh()
        self.ledger.sweep()
        return not self.ledger.live(float("inf"))

    # -- the inbox -------------------------------------------------------------------------
    def present(self) -> list[Copy]:
        return [self.copies[k] for k in self.current.values() if k is not None]

    def new_copy(self, name: str, job: Job, pieces: int, variant: str | None = None) -> Copy:
        no = sum(1 for c in self.copies.values() if c.name == name) + 1
        target = job.files(name, no, variant or f"{no}")
        order = sorted(target)
        n = max(1, min(pieces, len(order)))
        chunks = [order[i::n] for i in range(n)]
        c = Copy(f"{name}#{no}", name, no, job, target, chunks, self.ws.inbox / name)
        self.copies[c.key] = c
        self.current[name] = c.key
        return c

    def write_piece(self, c: Copy) -> None:
        for rel in c.pieces.pop(0):
            p = c.path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(c.target[rel])
            c.files[rel] = c.target[rel]
        if c.complete:
            with self.heartbeat.lock:
                self.heartbeat.paths.discard(c.path)
            c.versions.append(c.digest())
        else:
            done = len(c.files)
            self.partial[c.digest()] = f"{c.key} half-copied ({done} of {len(c.target)} files)"

    def start_copying(self, c: Copy) -> None:
        c.path.mkdir()
        c.inode = inode_of(c.path)
        self.by_inode[c.inode] = c
        with self.heartbeat.lock:
            self.heartbeat.paths.add(c.path)
        self.write_piece(c)

    def take_away(self, name: str) -> Copy | None:
        """The folder leaves the inbox (moved away: its inode is never reused here)."""
        key = self.current.get(name)
        if key is None:
            return None
        c = self.copies[key]
        with self.heartbeat.lock:
            self.heartbeat.paths.discard(c.path)
        os.rename(c.path, self.graveyard / c.key.replace("#", "."))
        c.removed = True
        self.current[name] = None
        return c

    def edit(self, c: Copy, file: str) -> None:
        """Same size, other bytes."""
        old = c.files[file]
        if file == "exit_code":
            new = b"0" if old != b"0" else b"3"
        else:
            new = noise(f"{c.key}/edit{len(c.versions)}/{file}", len(old))
        (c.path / file).write_bytes(new)
        c.files[file] = new
        c.edited = True
        c.versions.append(c.digest())

    def case_of(self, name: str, states=None):
        rows = [r for r in self.rows() if r.name == name and (states is None or r.state in states)]
        return rows[-1] if rows else None

    # -- rules: the inbox ------------------------------------------------------------------
    @precondition(lambda self: len(self.current) < MAX_FOLDERS)
    @rule(target=folders, job=jobs())
    @step()
    def drop_case(self, job):
        """A folder copied elsewhere, then moved into the inbox at once."""
        name = f"c{len(self.current) + 1}"
        self.did = f": {name}"
        c = self.new_copy(name, job, pieces=1)
        staged = self.staging / c.key.replace("#", ".")
        staged.mkdir()
        for rel, data in c.target.items():
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            (staged / rel).write_bytes(data)
        os.rename(staged, c.path)
        c.inode = inode_of(c.path)
        self.by_inode[c.inode] = c
        c.files = dict(c.target)
        c.pieces = []
        c.versions.append(c.digest())
        return name

    @precondition(lambda self: len(self.current) < MAX_FOLDERS and on("copy_in_pieces"))
    @rule(target=folders, job=jobs(), pieces=st.sampled_from([2, 3]))
    @step()
    def start_copy(self, job, pieces):
        """A folder copied into the inbox in pieces: its first files now, more later."""
        name = f"c{len(self.current) + 1}"
        self.did = f": {name}"
        self.start_copying(self.new_copy(name, job, pieces))
        return name

    # which folders a rule can act on now (a rule draws one of them: no step is a no-op)
    def in_progress(self) -> list[str]:
        return sorted(c.name for c in self.present() if not c.complete)

    def complete(self) -> list[str]:
        return sorted(c.name for c in self.present() if c.complete)

    def retryable(self) -> list:
        """The cases that ended without success and whose folder still holds their copy."""
        out = []
        for c in self.present():
            row = self.case_of(c.name)
            if (
                c.complete
                and row is not None
                and row.inode == c.inode
                and not row.request
                and self.machine.allowed(RETRY, row.state)
            ):
                out.append(row)
        return sorted(out, key=lambda r: r.id)

    def cancellable(self) -> list:
        return [r for r in self.rows() if not r.request and self.machine.allowed(CANCEL, r.state)]

    def held(self) -> list[str]:
        return sorted(
            {c.name for c in self.copies.values() if c.job.hold and c.key not in self.released}
        )

    @precondition(lambda self: bool(self.in_progress()))
    @rule(data=st.data())
    @step()
    def copy_more(self, data):
        """The next piece of a copy in progress (the last one completes it)."""
        name = data.draw(st.sampled_from(self.in_progress()), label="folder")
        self.write_piece(self.copies[self.current[name]])
        self.did = f": {name}" + (
            "" if self.copies[self.current[name]].complete else " (more to come)"
        )

    @precondition(lambda self: on("replace"))
    @rule(name=folders, job=jobs(), same_sizes=st.booleans(), pieces=st.sampled_from([2, 3]))
    @step()
    def replace_folder(self, name, job, same_sizes, pieces):
        """The folder is deleted and copied in again (a new version, in pieces); with
        same_sizes the new version has the old one's files and sizes, other bytes."""
        old = self.take_away(name)
        if same_sizes and old is not None:
            job = old.job
        self.start_copying(self.new_copy(name, job, pieces))

    @precondition(lambda self: on("edit") and bool(self.complete()))
    @rule(data=st.data(), file=st.sampled_from(["data.bin", "exit_code"]))
    @step()
    def edit_in_place(self, data, file):
        """A file of a complete folder rewritten in place: same size, other bytes."""
        name = data.draw(st.sampled_from(self.complete()), label="folder")
        self.edit(self.copies[self.current[name]], file)
        self.did = f": {name}"

    @precondition(lambda self: on("delete") and bool(self.present()))
    @rule(data=st.data())
    @step()
    def delete_folder(self, data):
        name = data.draw(st.sampled_from(sorted(c.name for c in self.present())), label="folder")
        self.take_away(name)
        self.did = f": {name}"

    # -- rules: the operator ---------------------------------------------------------------
    # They name a folder (a Bundle value), not "the nth case that can be cancelled now":
    # which case that is would depend on the real processes' timing, and a replay of the
    # example would then act on another case. A request the named folder's case cannot take
    # now is not made (the step is then a tick).
    @precondition(lambda self: on("retry"))
    @rule(name=folders, edit=st.sampled_from([None, "exit_code", "data.bin"]))
    @step()
    def retry(self, name, edit):
        """`caseflow retry` of the folder's case (if it ended without success and the folder
        is still its copy), after an edit of the folder (same size, other bytes) when `edit`
        names a file."""
        if self.stopped:
            return
        row = next((r for r in self.retryable() if r.name == name), None)
        if row is None:
            self.did = ": not now"
            return
        c = self.copies[self.current[row.name]]
        if edit is not None:
            self.edit(c, edit)
        self.retry_from[(row.id, row.run + 1)] = (c.key, len(c.versions) - 1)
        self.engine.store.set_request(row.id, RETRY)  # what `caseflow retry` records
        self.did = f": case {row.id} ({row.state}, run {row.run})"

    @precondition(lambda self: on("cancel"))
    @rule(name=folders)
    @step()
    def cancel(self, name):
        """`caseflow cancel` of the folder's latest case, if it has not ended."""
        if self.stopped:
            return
        rows = [r for r in self.cancellable() if r.name == name]
        if not rows:
            self.did = ": not now"
            return
        row = rows[-1]
        self.cancelled.add(row.id)
        self.engine.store.set_request(row.id, CANCEL)  # what `caseflow cancel` records
        self.did = f": case {row.id} ({row.state})"

    @precondition(lambda self: on("prune"))
    @rule(keep=st.sampled_from([0, 1, 3]), export=st.booleans(), tidy=st.booleans())
    @step()
    def prune(self, keep, export, tidy):
        """`caseflow prune --ended-before T --yes` (with `--export FILE` when `export`),
        through the functions the command calls, VACUUM included: T just after the ends of
        the ended cases but the `keep` latest (a cut-off a replay of the example draws
        alike). With `tidy` the operator first moves the folders of the cases that have
        ended (and been wrapped up) out of the inbox, as the command asks."""
        if self.stopped:
            return
        store = self.engine.store
        if tidy and on("delete"):
            for c in self.present():
                r = self.case_of(c.name)
                if r is not None and r.inode == c.inode and r.state in TERMINAL and not (
                    r.wrapup or r.request
                ):
                    self.take_away(c.name)
        ends = sorted(r.updated_at for r in self.rows() if r.state in TERMINAL)
        if len(ends) <= keep:
            self.did = ": nothing ended before the cut-off"
            return
        cut = ends[-keep - 1] + 0.001
        inbox, terminal = self.config.inbox, sorted(TERMINAL)
        planned = pruning.plan(store, inbox, cut, terminal)
        export_to = self.tmp / "pruned.jsonl" if export else None
        done = pruning.carry_out(store, inbox, planned, terminal, export_to)
        store.compact()  # what the command does without --no-vacuum
        self.did = (
            f": {len(done.removed)} of {len(ends)} ended cases"
            f" ({len(planned.kept)} kept: their folder is in the inbox)"
        )
        self.ledger.refresh()
        self.ledger.sweep()
        live = {p.case for p in self.ledger.live(float("inf"))}
        self.pruned.update((r.id, r) for r in done.removed)
        with promise(PrunedTooSoon):
            for r in done.removed:
                assert r.state in TERMINAL and r.updated_at < cut, f"case {r.id} had not ended"
                assert not r.wrapup and r.request is None and r.slot_id is None, (
                    f"case {r.id} was pruned with its wrap-up, a request or a slot pending"
                )
                assert r.id not in live, f"case {r.id} was pruned while its job still runs"
                c = self.by_inode.get(r.inode)
                assert c is None or self.current.get(c.name) != c.key, (
                    f"case {r.id} was pruned, but its folder {c.key} is still in the inbox"
                )
                assert store.get(r.id) is None and store.history(r.id) == [], (
                    f"case {r.id} was pruned, but rows of it are left"
                )
            if export_to is not None:
                lines = export_to.read_text().splitlines() if export_to.exists() else []
                ids = [json.loads(line)["id"] for line in lines[self.exported :]]
                assert ids == [r.id for r in done.removed], (
                    f"the export has {ids} for the pruned cases {[r.id for r in done.removed]}"
                )
                self.exported = len(lines)

    @precondition(lambda self: on("drain") and self.drained is None)
    @rule()
    @step()
    def pause_host(self):
        """`caseflow host pause`: the host takes no new case and starts no upload or submit;
        its running jobs go on."""
        if self.stopped:
            return
        started = {(r.id, str(r.run)) for r in self.rows() if r.state in JOB_STATES}
        self.drained = (uptime(), started)
        self.engine.store.set_host_drain(
            self.config.hosts[0].name, "model", self.engine.clock()
        )  # what `caseflow host pause` records

    @precondition(lambda self: self.drained is not None)
    @rule()
    @step()
    def resume_host(self):
        """`caseflow host resume`: the waiting cases go on."""
        if self.stopped:
            return
        self.resume()

    def resume(self) -> None:
        self.engine.store.set_host_drain(self.config.hosts[0].name, None, self.engine.clock())
        self.drained = None

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data())
    @step()
    def release_job(self, data):
        """The jobs of a folder's copies that wait for a release go on."""
        name = data.draw(st.sampled_from(self.held()), label="folder")
        self.did = f": {name}"
        for c in self.copies.values():
            if c.name == name and c.job.hold and c.key not in self.released:
                (self.ws.ctl / f"release-{c.target['hold'].decode()}").touch()
                self.released.add(c.key)

    # -- rules: faults ---------------------------------------------------------------------
    @precondition(lambda self: on("restart"))
    @rule()
    @step()
    def restart_daemon(self):
        """The daemon is SIGKILLed and started again: its memory is gone, its jobs run on."""
        if self.stopped:
            return
        self.engine.store.close()
        for h in self.engine.hosts.values():  # a killed process's connections end with it
            h.close()
        self.engine = None
        self.start_engine()

    @precondition(lambda self: self.HOST is not None and on("cut"))
    @rule(how=st.sampled_from(["cut", "kill_master"]))
    @step()
    def lose_connection(self, how):
        """The network drops every connection to the host (the relay cuts them); or, over
        openssh, the master connection is SIGKILLed. Over openssh either way the person's
        login is gone: the host waits for `login`."""
        if self.stopped:
            return
        if how == "kill_master" and self.host.kind == "openssh":
            pid = self.host.master.pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        else:
            self.host.relay.cut()
        if self.host.kind == "openssh":
            self.master_down = True
        self.kept_since.clear()  # a wrap-up waits for the host: a slot kept is no fault

    @precondition(lambda self: self.master_down)
    @rule()
    @step()
    def login(self):
        """openssh: a person logs in again (`caseflow login`: the master, a one-time code)."""
        if self.stopped:
            return
        self.relogin()

    def relogin(self) -> None:
        deadline = time.monotonic() + 30
        while self.host.master.pid() is not None:  # a cut master may take a moment to go
            assert time.monotonic() < deadline, "the cut master connection lives on"
            time.sleep(0.05)
        for attempt in range(5):  # a person tries again when the login's connection drops
            try:
                self.host.login()
                break
            except Exception:  # pexpect's EOF: the relay cut a connection it had just taken
                if attempt == 4:
                    raise
                time.sleep(0.5)
        self.master_down = False
        self.kept_since.clear()

    @precondition(
        lambda self: on("queue_down")
        and self.HOST is not None
        and self.HOST[1] == "pueue"
        and not (self.queue_change and self.queue_change[0])
    )
    @rule()
    @step(ticks=False)
    def queue_daemon_down(self):
        """pueued dies (SIGKILL: its tasks' processes go on): no case fails, the host is
        shown paused (queue daemon down) within a few probes (ticks until it is, or until
        the check's time is up: the check after a tick then fails)."""
        if self.stopped:
            return
        self.host.pueue.kill()
        self.queue_change = (True, time.monotonic(), self.ticks)
        self.until_shown(lambda kind: kind == QUEUE_DOWN)

    @precondition(lambda self: bool(self.queue_change and self.queue_change[0]))
    @rule()
    @step(ticks=False)
    def queue_daemon_up(self):
        """pueued is started again (its state file kept): work goes on, the problem goes
        (ticks until it has, or until the check's time is up)."""
        if self.stopped:
            return
        self.queue_up()
        self.until_shown(lambda kind: kind in (None, UNREACHABLE))

    def queue_changed(self) -> tuple[float, int]:
        """Since when (time, ticks) the host's health should show the queue's last change: the
        change, or the last remote call failed on purpose after it (a probe that failed says
        nothing about the queue; the next is due a reconnect interval later)."""
        _, at, ticks = self.queue_change
        return max((at, ticks), self.failed)

    def until_shown(self, shown) -> None:
        """Tick until the host's problem, as the store has it, is `shown`, at most a little
        longer than HEALTH_SHOWN (the check after each tick fails past it)."""
        name = self.config.hosts[0].name
        while True:
            at, ticks = self.queue_changed()
            late = time.monotonic() - at >= HEALTH_SHOWN[0] + 2
            if late and self.ticks - ticks >= HEALTH_SHOWN[1]:
                return
            self.step_engine()
            kinds = {n: k for n, _, _, k in self.engine.store.host_problems()}
            if shown(kinds.get(name)):
                return

    def queue_up(self) -> None:
        self.host.pueue.start()
        self.queue_change = (False, time.monotonic(), self.ticks)

    @precondition(
        lambda self: on("reboot")
        and (self.HOST is None or self.HOST[1] in ("direct", "pueue"))
        and bool(self.present())  # (the test's own model: a folder that may have a job)
    )
    @rule(when=st.sampled_from(["now", "a job runs"]))
    @step()
    def reboot(self, when):
        """The GPU host reboots, short of rebooting: every process of every job dies at once
        (SIGKILL: no END in the ledger, no exit code), the host's boot id changes (direct)
        and its queue daemon comes back with its state file (pueue; killed first, as in a
        reboot, so that it does not see its tasks die). The runs taken away are noted: only
        they may be rerun (RerunWrong). `when`: at once, or once a job runs (ticking at most
        2 x RUN_UNTIL seconds for one: most jobs of an example run a moment only)."""
        if self.stopped:
            return
        until = time.monotonic() + 2 * RUN_UNTIL
        while when != "now" and time.monotonic() < until:
            if any(r.state == "running" for r in self.rows()) and self.ledger.live(float("inf")):
                break
            self.step_engine()
            self.ledger.refresh()
            self.ledger.sweep()
        deadline = time.monotonic() + 5  # a submit in flight: its job may not have said START
        while self.engine.inflight.case_ids() and time.monotonic() < deadline:
            time.sleep(0.02)
        pueue = self.HOST is not None and self.HOST[1] == "pueue"
        if pueue and not (self.queue_change and self.queue_change[0]):
            self.host.pueue.kill()
        self.ledger.refresh()
        self.ledger.sweep()
        me = os.getpgrp()
        taken = []
        for p in self.ledger.live(float("inf")):
            fields = proc_stat(p.pid)
            if fields is None or fields[19] != p.st:
                continue
            group = int(fields[2])
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group != me:
                    os.killpg(group, signal.SIGKILL)
                os.kill(p.pid, signal.SIGKILL)
            if p.kind == "main" and p.run_no is not None:
                taken.append((p.case, p.run_no))
        deadline = time.monotonic() + 10
        while any(alive(p.pid, p.st) for p in self.ledger.live(float("inf"))):
            assert time.monotonic() < deadline, "a job's process outlived SIGKILL"
            time.sleep(0.02)
        # and every run that may have had a job then (one launched a moment before may not
        # have written its START yet)
        may = {(r.id, r.run) for r in self.rows() if r.state in JOB_STATES}
        self.rebooted.update(taken, may)
        self.reboots += 1
        self.boot_id.write_text(f"boot-{self.reboots}\n")
        if pueue:
            self.queue_up()
        self.did = f": took away {sorted(taken) or 'no job'}"

    @precondition(lambda self: on("lost_reply"))
    @rule(n=st.sampled_from([1, 3, 6]), of=st.sampled_from(["job_start", "any_command"]))
    @step()
    def lose_replies(self, n, of):
        """The next n commands (of that kind) run on the remote side; caseflow never hears."""
        self.faults.lose = n
        self.faults.lose_only_once = of == "job_start"

    @precondition(lambda self: on("remote_down"))
    @rule(n=st.sampled_from([2, 5]))
    @step()
    def remote_down(self, n):
        """The next n remote calls fail before they do anything."""
        self.faults.down = n

    @precondition(lambda self: on("clock_step"))
    @rule()
    @step()
    def clock_step(self):
        """The wall clock jumps forward (NTP, a suspended VM); the monotonic clock does not."""
        self.clock.offset += CLOCK_STEP
        for r in self.rows():
            if r.state not in TERMINAL:
                self.exempt_cases.add(r.id)
        for c in self.present():
            c.exempt = True

    # -- rules: time passes ----------------------------------------------------------------
    @rule()
    @step()
    def advance(self):
        """A moment passes: one tick of the daemon (the simplest step: what a shrunk example
        is padded with where the time it takes matters)."""

    @rule(n=st.sampled_from([3, 10]))
    @step(ticks=False)
    def tick(self, n):
        for _ in range(n if not self.stopped else 0):
            self.step_engine()

    @rule(state=st.sampled_from(["running", "uploaded", "queued", "failure", "success"]))
    @step(ticks=False)
    def run_until(self, state):
        """Tick until a case enters `state` (at most RUN_UNTIL seconds)."""
        if self.stopped:
            return
        before = {(r.id, r.run) for r in self.rows() if r.state == state}
        deadline = time.monotonic() + RUN_UNTIL
        while time.monotonic() < deadline:
            self.step_engine()
            rows = self.rows()
            if {(r.id, r.run) for r in rows if r.state == state} - before or self.idle(rows):
                return

    # -- ground truth, after every step ----------------------------------------------------
    def observe(self, rows) -> None:
        """Remember how each run ended as the engine said it (a retry starts the next)."""
        for r in rows:
            if r.state in TERMINAL:
                self.ended[(r.id, r.run)] = (r.state, r.exit_code, r.job_outcome)

    def check(self, final: bool = False) -> None:
        led = self.ledger
        led.refresh()
        now = led.sweep()
        store = self.engine.store
        rows = {r.id: r for r in store.cases()}
        self.observe(rows.values())
        holder = {(s.grp, str(s.idx)): s.case_id for s in store.slots() if s.case_id}
        if len(self.faults.injected) != self.faults_checked:
            # the remote side failed meanwhile: a wrap-up that could not see the job gone
            # (its look failed or its reply was lost) keeps the slot; the grace starts again
            self.faults_checked = len(self.faults.injected)
            self.kept_since.clear()

        known = {**self.pruned, **rows}  # what the store has, and what a prune took

        def show(case_id):
            r = known.get(case_id)
            return f"case {case_id} {r.name!r} ({r.state}, run {r.run})" if r else f"case {case_id}"

        # every case is in one state of the spec, and got there by a walk of the spec
        ended_lost = set()
        with promise(NotAWalkOfTheSpec):
            for r in rows.values():
                assert r.state in STATES, f"{show(r.id)} is in {r.state!r}, not a state of the spec"
                hist = [(h.src, h.dst, h.trigger) for h in store.history(r.id)]
                assert hist and hist[0][0] is None and hist[0][1] == INITIAL, (
                    f"{show(r.id)}: its history does not begin with {INITIAL}: {hist[:2]}"
                )
                for (_, dst, _), nxt in zip(hist, hist[1:], strict=False):
                    assert nxt[0] == dst and (nxt[0], nxt[2], nxt[1]) in MOVES, (
                        f"{show(r.id)}: {nxt[0]} -> {nxt[1]} ({nxt[2]}) after {dst} is not a "
                        f"move of the spec; history: {hist}"
                    )
                assert hist[-1][1] == r.state, f"{show(r.id)}: history ends in {hist[-1][1]}"
                run = 1
                for src, _dst, trig in hist[1:]:
                    if trig in LOST:
                        ended_lost.add((r.id, run))
                    if src in TERMINAL or trig in RERUN:
                        run += 1
                assert run == r.run, f"{show(r.id)}: its history has {run} runs, the case {r.run}"

        # the engine's word on a run's end is the job's: an exit code means it ran, and it is
        # the job's; a job the queue lost was started
        with promise(EndWithoutItsJob):
            for case_id, n in sorted(ended_lost):
                assert led.starts.get((case_id, n)), (
                    f"{show(case_id)}: run {n} ended lost ('the queue no longer knows the job') "
                    "but no job of that run ever started"
                )
            for (case_id, run), (state, code, outcome) in self.ended.items():
                if code is None:
                    continue
                started = led.starts.get((case_id, run), [])
                assert started, (
                    f"{show(case_id)}: run {run} ended {state} with the job's exit code {code} "
                    f"({outcome}), but no job of that run ever started"
                )
                p = started[0]
                assert p.code is None or p.code == code, (
                    f"{show(case_id)}: run {run} ended with exit code {code}; its job exited "
                    f"{p.code}"
                )

        # only a run the infrastructure took away is run again by itself, at most BUDGET times
        # between two retries, and the case counts them
        with promise(RerunWrong):
            for r in rows.values():
                run, since_retry = 1, 0
                for h in store.history(r.id)[1:]:
                    if h.trigger in RERUN:
                        assert (r.id, run) in self.rebooted, (
                            f"{show(r.id)}: run {run} was rerun ({h.detail}), but no reboot "
                            "took its job away"
                        )
                        since_retry += 1
                        assert since_retry <= BUDGET, (
                            f"{show(r.id)}: rerun {since_retry} times since its last retry; "
                            f"the budget is {BUDGET}"
                        )
                    if h.src in TERMINAL:
                        since_retry = 0
                    if h.src in TERMINAL or h.trigger in RERUN:
                        run += 1
                assert r.reruns == since_retry, (
                    f"{show(r.id)}: counts {r.reruns} reruns; its history has {since_retry}"
                )

        # each run starts at most one job
        with promise(JobStartedTwice):
            for p in led.procs.values():
                assert p.case in known, f"a job ran for {show(p.case)}, which the store lacks"
            for (case_id, run), started in led.starts.items():
                assert len(started) == 1, (
                    f"{show(case_id)} run {run}: its job started {len(started)} times: "
                    + "; ".join(f"pid {p.pid} at {p.start:.2f}" for p in started)
                )

        # ... on the inputs it was meant to see (a retry: the folder when it was asked)
        with promise(WrongInputs):
            for p in led.procs.values():
                if p.kind == "main" and p.digest is not None:
                    self.check_inputs(p, known[p.case], show)

        # a stop sends TERM once: a second one can cut a job's checkpoint short
        with promise(SignalledTwice):
            for p in led.procs.values():
                assert p.terms <= 1 and p.ends <= 1, (
                    f"{show(p.case)}: its {p} got TERM {p.terms} times and ended {p.ends} times"
                )

        # promise 1: a slot runs one job at a time
        live = led.live(now)
        with promise(TwoJobsOnOneSlot):
            on_slot: dict[tuple[str, str], Proc] = {}
            for p in sorted(live, key=lambda p: p.start):
                other = on_slot.setdefault((p.group, p.slot), p)
                assert (other.case, other.run) == (p.case, p.run), (
                    f"two jobs at once on GPU slot {p.group}[{p.slot}]: {other} "
                    f"({show(other.case)}) and {p} ({show(p.case)})"
                )
        strays = [p for p in live if holder.get((p.group, p.slot)) != p.case]
        if strays:  # the engine let go of a slot whose job still runs (once it is surely so)
            time.sleep(CONFIRM)
            led.sweep()
            for p in strays:
                h = holder.get((p.group, p.slot))
                if not p.dead:
                    raise SlotFreedWhileJobRuns(
                        f"{show(p.case)} does not hold GPU slot {p.group}[{p.slot}] but its "
                        f"{p} still runs ({uptime() - p.start:.1f} s after its start); the "
                        "slot is " + (f"held by {show(h)}" if h else "free")
                    )
        with promise(SlotKeptAfterJob):
            for case_id in set(holder.values()):
                r = rows.get(case_id)
                if (
                    r is None
                    or r.state not in TERMINAL
                    or any(p.case == case_id for p in live)
                    or self.master_down  # its wrap-up cannot see the job gone
                ):
                    self.kept_since.pop(case_id, None)
                    continue
                since, ticks = self.kept_since.setdefault(case_id, (time.monotonic(), self.ticks))
                long_after = (
                    time.monotonic() - since >= KEPT_SLOT_GRACE[0]
                    and self.ticks - ticks >= KEPT_SLOT_GRACE[1]
                )
                assert not (final or long_after), (
                    f"{show(case_id)} still holds a slot, long after its job's processes are gone"
                )

        # a drained host starts no job but those whose submit was sent before the drain
        with promise(WorkOnDrainedHost):
            if self.drained is not None:
                since, exempt = self.drained
                for p in self.ledger.procs.values():
                    if p.kind == "main" and p.start >= since and (p.case, p.run) not in exempt:
                        raise AssertionError(
                            f"{show(p.case)}: its job {p} started {p.start - since:.2f} s "
                            "after the host was drained"
                        )

        # what is wrong with the host is in the store with its kind and a real since; a
        # stopped pueued shows within a few probes, and goes once it runs again
        with promise(HostHealthWrong):
            shown = {name: (since, kind) for name, _, since, kind in store.host_problems()}
            for name, (since, kind) in shown.items():
                assert since is not None and kind in HOST_PROBLEM_KINDS, (
                    f"host {name}: problem shown with since {since!r} and kind {kind!r}"
                )
            if self.queue_change is not None:
                down = self.queue_change[0]
                at, ticks = self.queue_changed()
                got = shown.get(self.config.hosts[0].name, (None, None))[1]
                # over openssh the host can only be probed through its master connection: while
                # that process is gone (ground truth: /proc), the host rightly waits for a login
                # (a CI run saw "login" 8.4 s after pueued came back; not reproduced on replay)
                master_gone = (
                    self.host is not None
                    and self.host.kind == "openssh"
                    and self.host.master.pid() is None
                )
                settled = (
                    time.monotonic() - at >= HEALTH_SHOWN[0]
                    and self.ticks - ticks >= HEALTH_SHOWN[1]
                    and not self.master_down
                    and not master_gone
                )
                STATS["queue_shown"] += settled
                if settled and down:
                    assert got == QUEUE_DOWN, (
                        f"pueued was killed {time.monotonic() - at:.1f} s ago; the host shows "
                        f"{got or 'no problem'}"
                    )
                if settled and not down:
                    assert got in (None, UNREACHABLE), (
                        f"pueued runs again since {time.monotonic() - at:.1f} s; the host still "
                        f"shows {got}"
                    )

        # every copy of a folder is at most one case (exactly one once it is complete: at
        # the end), a pruned case counted (a copy detected again after its case was pruned
        # would be a second one)
        with promise(CopyNotOneCase):
            per_copy: dict[str, list[int]] = {}
            for r in known.values():
                c = self.by_inode.get(r.inode)
                assert c is not None, f"{show(r.id)}: no folder the test copied has its inode"
                per_copy.setdefault(c.key, []).append(r.id)
            for key, ids in per_copy.items():
                assert len(ids) == 1, f"the copy {key} became {len(ids)} cases: {ids}"

        # nothing but each case's own results in its results folder
        with promise(WrongResults):
            self.check_results(known, show, final)

    def check_inputs(self, p: Proc, r, show) -> None:
        c = self.by_inode.get(r.inode)
        assert c is not None, f"{show(p.case)} was made from no folder the test copied"
        key = (p.case, p.run_no)
        since = self.retry_from.get(key, (c.key, 0))[1] if p.run_no != 1 else 0
        if p.digest in c.versions[since:]:
            return
        seen = self.partial.get(p.digest) or next(
            (
                f"{o.key} version {i + 1}"
                for o in self.copies.values()
                for i, d in enumerate(o.versions)
                if d == p.digest
            ),
            "no version of any folder",
        )
        what = (
            f"the folder as it was when the retry was asked (version {since + 1} of "
            f"{c.key}) or later"
            if key in self.retry_from
            else f"its own copy {c.key} once complete"
        )
        raise AssertionError(
            f"{show(p.case)}: the job of run {p.run} saw inputs that are {seen}, not {what}"
        )

    def check_results(self, rows, show, final: bool) -> None:
        """Each entry of the results folder is one case's: its results (results_path), or
        an earlier run's kept next to them (<that name>.run-<run>[-<case id>...]); each
        holds only what that case's job of that run wrote, and its log."""
        if not self.results.is_dir():
            return
        mine = {Path(r.results_path).name: r for r in rows.values() if r.results_path}
        for entry in sorted(self.results.iterdir()):
            if entry.name.startswith(".staging-") and not final:
                continue
            r, run = mine.get(entry.name), None
            if r is None:
                m = EARLIER_RUN.match(entry.name)
                r = mine.get(m.group(1)) if m else None
                run = int(m.group(2)) if m else None
                assert r is not None and run < r.run and m.group(3) in (None, str(r.id)), (
                    f"{entry} in the results folder is no case's results"
                )
            for rel, data in read_tree(entry).items():
                assert RESULT_FILES.match(rel), f"{show(r.id)}: {rel} in its results is no job's"
                if rel != "output/result.txt":
                    continue
                m = RESULT_RE.match(data.decode("utf-8", "replace"))
                assert m and int(m.group(1)) == r.id, (
                    f"{show(r.id)}: its results in {entry.name} hold another case's output: "
                    f"{data!r}"
                )
                said = int(m.group(2)) if m.group(2).isdigit() else None
                assert said is None or said <= r.run and run in (None, said), (
                    f"{show(r.id)}: its results in {entry.name} hold run {said}'s output"
                )
        for r in rows.values():
            if r.state != "success" or not r.results_fetched:
                continue
            out = Path(r.results_path) / "output" / "result.txt"
            assert out.is_file(), f"{show(r.id)} succeeded, but its results lack {out.name}"
            text = out.read_text()
            m = RESULT_RE.match(text)
            assert m and (not m.group(2).isdigit() or int(m.group(2)) == r.run), (
                f"{show(r.id)} succeeded in run {r.run}, but its results are {text!r}"
            )

    # -- the end of an example -------------------------------------------------------------
    def drain(self) -> None:
        """Every copy finished, every hold released, no more faults: tick until every case
        has ended and every job process is gone."""
        self.faults.clear()
        if self.master_down:
            self.relogin()
        if self.drained is not None:
            self.resume()
        if self.queue_change and self.queue_change[0]:
            self.queue_up()
        for c in self.present():
            while not c.complete:
                self.write_piece(c)
        for c in self.copies.values():
            if c.job.hold:
                (self.ws.ctl / f"release-{c.target['hold'].decode()}").touch()
                self.released.add(c.key)
        deadline = time.monotonic() + DRAIN_DEADLINE
        while True:
            self.step_engine()
            rows = self.rows()
            if self.idle(rows):
                return
            if time.monotonic() > deadline:
                stuck = [
                    f"{r.id} {r.name} {r.state} {r.reason or r.last_error or ''}"
                    for r in rows
                    if r.state not in TERMINAL or r.request or r.wrapup
                ]
                live = [str(p) for p in self.ledger.live(float("inf"))]
                known = {r.inode for r in rows}
                unseen = [c.key for c in self.present() if c.inode not in known]
                raise NotSettled(
                    f"not settled after {DRAIN_DEADLINE:.0f} s: cases {stuck}, jobs {live}, "
                    f"folders that never became a case {unseen}"
                )

    def final_checks(self) -> None:
        self.check(final=True)
        store = self.engine.store
        rows = {r.id: r for r in store.cases()}
        for r in rows.values():
            STATS["reruns"] += sum(h.trigger in RERUN for h in store.history(r.id))
            STATS["lost_too_often"] += "lost to the infrastructure" in (r.reason or "")
        with promise(SlotKeptAfterJob):
            held = [(s.grp, s.idx, s.case_id) for s in store.slots() if s.case_id is not None]
            assert not held, f"slots still held at the end, every job gone: {held}"
        with promise(TwoJobsOnOneSlot):  # no two processes' lifetimes overlapped on a slot
            procs = sorted(self.ledger.procs.values(), key=lambda p: p.start)
            for i, p in enumerate(procs):
                for q in procs[i + 1 :]:
                    if (p.group, p.slot) != (q.group, q.slot) or (p.case, p.run) == (
                        q.case,
                        q.run,
                    ):
                        continue
                    assert not (q.start < p.definite_end() and p.start < q.definite_end()), (
                        f"two jobs at once on GPU slot {p.group}[{p.slot}]: {p} "
                        f"({p.start:.2f}-{p.definite_end():.2f}) and {q} "
                        f"({q.start:.2f}-{q.definite_end():.2f})"
                    )
        by_copy = {self.by_inode[r.inode].key: r for r in rows.values()}
        with promise(CopyNotOneCase):  # each folder that stayed is exactly one case
            for c in self.present():
                assert c.key in by_copy, f"the folder {c.key} never became a case"
        with promise(WrongResults):
            for c in self.present():
                # untouched, meant to succeed and not cancelled: it succeeded (its results
                # are checked with every success)
                r = by_copy[c.key]
                if (
                    not c.edited
                    and not c.exempt
                    and c.job.exit == 0
                    and r.id not in self.cancelled
                    and r.id not in self.exempt_cases
                    and r.run == 1 + r.reruns  # run again only by reruns
                ):
                    if r.reruns == BUDGET and r.state == "failure":
                        with promise(RerunWrong):
                            assert "lost to the infrastructure" in (r.reason or ""), (
                                f"case {r.id} {r.name!r} was rerun {r.reruns} times, then "
                                f"failed: {r.reason}"
                            )
                        continue
                    assert r.state == "success", (
                        f"case {r.id} {r.name!r} of the untouched folder {c.key} (job {c.job}) "
                        f"ended {r.state}: {r.reason}"
                    )
                # the engine never wrote into the inbox
                assert digest_of(read_tree(c.path)) == c.digest(), (
                    f"the inbox folder {c.key} changed"
                )

    def teardown(self):
        if TRACE:
            print(f"-- end of example {STATS['examples'] + 1}: {self.steps} steps")
        STATS["examples"] += 1
        STATS["steps"] += self.steps
        try:
            if self.violation is not None:
                raise self.violation
            if not self.broken and self.engine is not None:
                try:
                    self.drain()
                    if TRACE:
                        print("-- drained: " + " ".join(
                            f"{r.id}:{r.name}:{r.state}" for r in self.rows()))
                    self.final_checks()
                except Broken as exc:
                    raise type(exc)(
                        f"{exc}\n\nThe example, step by step (cases as id:name:state after "
                        "it), then every copy finished and every job released:\n"
                        + "\n".join(self.story[-40:])
                    ) from None
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        self.heartbeat.stop.set()
        self.heartbeat.join(timeout=5)
        me = os.getpgrp()
        self.ledger.refresh()
        groups = set()
        for p in self.ledger.procs.values():
            fields = proc_stat(p.pid)
            if fields is not None and fields[19] == p.st and int(fields[2]) != me:
                groups.add(int(fields[2]))
        for pid_file in self.ws.remote.glob("*/.caseflow/pid"):
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            fields = proc_stat(pid)
            if fields is not None and int(fields[2]) == pid and pid != me:  # a session leader
                groups.add(pid)
        for g in groups:
            try:
                os.killpg(g, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            alive(p.pid, p.st) for p in self.ledger.procs.values()
        ):
            time.sleep(0.05)
        if self.engine is not None:
            self.engine.store.close()
            for h in self.engine.hosts.values():
                h.close()
        if self.host is not None:
            self.host.close()
        if KEEP:
            print(f"example kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _caseflow_logs(caplog):
    """Warnings only: an example runs hundreds of ticks, a soak millions (conftest's fixture
    keeps DEBUG records for the whole test)."""
    caplog.set_level(logging.WARNING, logger="caseflow")
    logging.getLogger("transitions").setLevel(logging.WARNING)


def test_model_based():
    """The local profile, in every `make test` (CASEFLOW_MODEL_EXAMPLES x _STEPS)."""
    explore(CaseflowModel, EXAMPLES, STEPS, "local")


# the remote profile: (transport, backend, pueue version); the slower one, over the real sshd
REMOTE_HOSTS = [
    ("ssh", "pueue", "3.4.1"),
    ("ssh", "pueue", "4.0.4"),
    ("openssh", "pueue", "4.0.4"),
    ("openssh", "direct", "4.0.4"),
    ("ssh", "gridengine", "8.1.9"),  # Debian 12's Grid Engine (the version is its own)
]


@pytest.mark.parametrize("host", REMOTE_HOSTS, ids=lambda h: "-".join(h))
def test_model_based_remote(host):
    """The remote profile: the real sshd (paramiko's `ssh`, or OpenSSH's `openssh` through a
    master connection behind a one-time code), real pueued 3.x/4.x or the direct runner, and
    the connections cut and the master killed at random (CASEFLOW_MODEL_REMOTE_EXAMPLES x
    _REMOTE_STEPS)."""
    model = type(
        f"CaseflowModel_{'_'.join(h.replace('.', '') for h in host)}",
        (CaseflowModel,),
        {"HOST": host},
    )
    explore(model, REMOTE_EXAMPLES, REMOTE_STEPS, "remote " + "-".join(host))


def explore(model, examples: int, steps: int, profile: str):
    database = None
    if os.environ.get("CASEFLOW_MODEL_DB"):
        database = DirectoryBasedExampleDatabase(os.environ["CASEFLOW_MODEL_DB"])
    test_settings = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=False,
        print_blob=True,
        database=database,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    )
    forced = hypothesis_core.global_force_seed  # pytest --hypothesis-seed=N
    chosen = forced if forced is not None else int(SEED or random.SystemRandom().randrange(2**32))
    print(
        f"caseflow model ({profile}): {examples} examples of up to {steps} steps, seed {chosen} "
        f"(again: CASEFLOW_MODEL_SEED={chosen}); without: {sorted(WITHOUT) or 'nothing'}"
    )
    hypothesis_core.global_force_seed = chosen
    STATS.update(examples=0, steps=0, queue_shown=0, reruns=0, lost_too_often=0)
    started = time.monotonic()
    try:
        run_state_machine_as_test(model, settings=test_settings)
    finally:
        hypothesis_core.global_force_seed = forced
        print(
            f"caseflow model ({profile}): ran {STATS['examples']} examples, {STATS['steps']} "
            f"steps in {time.monotonic() - started:.0f} s (seed {chosen}); a killed or "
            f"restarted pueued checked as shown {STATS['queue_shown']} times; {STATS['reruns']} "
            f"reruns, {STATS['lost_too_often']} cases lost more often than the budget"
        )


def test_model_example_results_beside_a_pruned_cases_kept_run():
    """A shrunk example the test found (issue 28): a case rerun after a reboot keeps its lost
    run's results as results/c1.run-1; its folder is replaced (the case fails), the case is
    pruned, and the new copy's case took results/c1, beside the kept run it would pass for.
    A new case's results never go beside an earlier run's kept results."""
    state = CaseflowModel()
    try:
        job = Job(group="gpu_b", exit=0, hold=True, term_s=0, child_s=0, work_s=0.3, data=1000)
        name = state.drop_case(job=job)
        state.reboot(when="a job runs")
        state.replace_folder(job=job, name=name, pieces=2, same_sizes=True)
        state.replace_folder(job=job, name=name, pieces=2, same_sizes=True)
        state.tick(n=10)
        state.prune(export=True, keep=0, tidy=True)
        assert state.rebooted, "the reboot took no job away: the example tests nothing"
    finally:
        state.teardown()
