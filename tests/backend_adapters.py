"""The queue backends the contract suite runs over (tests/test_backend_contract.py).

An `Adapter` holds one backend under test, reached through a real transport, and answers what
the queue itself says about a job, read with the queue's own tools (pueue's client, Slurm's
squeue and sacct in the cluster's namespace, /proc for the direct runner), never through the
backend under test. It also produces, for real, what the suite needs: a queue that forgot a job,
a record on the host that cannot be read, one entry of the real poll answer in a form the
backend's parser does not know.

Every test gets its own case folders under its tmp_path; job names are unique in the session
(`token`): the Slurm cluster is shared and remembers the jobs of earlier tests by name.
"""

from __future__ import annotations

import json
import os
import signal
import xml.etree.ElementTree as ET
from pathlib import Path

from caseflow.backends import JobRef, JobSpec
from caseflow.backends.direct import MARK, DirectBackend
from caseflow.backends.gridengine import GridEngineBackend
from caseflow.backends.gridengine_options import GridEngineOptions
from caseflow.backends.pueue import PueueBackend
from caseflow.backends.slurm import SlurmBackend
from caseflow.backends.slurm_options import SlurmOptions
from caseflow.config import BackendConfig, GroupConfig, TransportConfig
from caseflow.errors import TransientError
from caseflow.transports import RunResult
from caseflow.transports.local import LocalTransport
from caseflow.transports.ssh import SSHTransport
from harness import DEADLINE, wait_for
from pueue_daemon import PueueDaemon, status_name
from sshd import transport_settings

# A held job waits in its folder until the file `release` is there.
HOLD = "while [ ! -e release ]; do sleep 0.05; done"
# The suite's groups: "gpu_a" runs several jobs at once; "gpu_one" runs one at a time, so a
# second job of it waits in the queue (for the adapters that have one).
GROUPS = ("gpu_a", "gpu_one")


class Observed:
    """The transport as the backend sees it: counts the commands the backend sends, and, when
    `edit_poll` is set, hands the backend its poll's real answer edited by it."""

    def __init__(self, inner, poll_name: str):
        self.inner = inner
        self.poll_name = poll_name  # the $0 the backend gives its poll script
        self.sent = 0
        self.edit_poll = None       # stdout -> stdout

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, argv, *args, **kwargs) -> RunResult:
        return self._seen(argv, self.inner.run(argv, *args, **kwargs))

    def run_once(self, argv, *args, **kwargs) -> RunResult:
        return self._seen(argv, self.inner.run_once(argv, *args, **kwargs))

    def _seen(self, argv, res: RunResult) -> RunResult:
        self.sent += 1
        if self.edit_poll is not None and list(argv[3:4]) == [self.poll_name]:
            res = RunResult(res.returncode, self.edit_poll(res.stdout), res.stderr)
        return res

    def counts(self) -> tuple[int, int | None]:
        """(commands the backend asked for, commands the ssh transport really ran or None)."""
        return self.sent, getattr(self.inner, "commands", None)


def connected(transport):
    """`transport`, its connection made (tried again for a while): a connection attempt that
    the loaded machine's sshd or the cluster's bridge drops (seen once in a full run: EOF at
    the SSH banner) is a transient error the engine waits out, not what this suite tests."""
    def attempt():
        try:
            return transport.run(["true"]).returncode == 0
        except TransientError:
            return False
    wait_for(attempt, DEADLINE, interval=0.5, what=f"a connection to {transport.name}")
    return transport


class Adapter:
    """One backend under test. Subclasses say how it is reached and what its queue says."""
    has_queue = True   # a job can wait in the queue (the direct runner starts each at once)
    poll_name = ""
    # contract cases the backend fails today: case -> why, and where it is to be fixed. The
    # case is then an expected failure, and an error as soon as the backend passes it.
    known_gaps: dict[str, str] = {}

    def __init__(self, transport, root: Path):
        self.root = root
        self.transport = Observed(transport, self.poll_name)
        self.token = os.urandom(3).hex()
        self.submitted: list[JobRef] = []
        self.backend = self.make_backend()

    def make_backend(self):
        raise NotImplementedError

    # -- jobs ------------------------------------------------------------------------------
    def spec(self, case_id: int, command: str, *, group: str = "gpu_a",
             env: dict | None = None) -> JobSpec:
        folder = self.root / f"case {case_id}"
        (folder / ".caseflow").mkdir(parents=True, exist_ok=True)  # as the upload leaves it
        return JobSpec(case_id=case_id, label=f"caseflow-{self.token}-{case_id}-1",
                       remote_path=str(folder), group=group, command=command,
                       env={"CASEFLOW_CASE_ID": str(case_id), **(env or {})})

    def submit(self, spec: JobSpec) -> JobRef:
        ref = JobRef(spec.case_id, self.backend.submit(spec), spec.label, spec.remote_path)
        self.submitted.append(ref)
        return ref

    @staticmethod
    def release(spec: JobSpec | JobRef) -> None:
        (Path(spec.remote_path) / "release").touch()

    # -- the queue's own view ----------------------------------------------------------------
    def on_queue(self, spec: JobSpec) -> list[str]:
        """The ids of the jobs the queue holds under the spec's label."""
        raise NotImplementedError

    def running(self, ref: JobRef) -> bool:
        raise NotImplementedError

    def waiting(self, ref: JobRef) -> bool:
        raise NotImplementedError

    def ended(self, ref: JobRef) -> bool:
        raise NotImplementedError

    # -- what the suite produces for real ----------------------------------------------------
    def forget(self, refs: list[JobRef]) -> None:
        """Make the queue forget these jobs, which have ended."""
        raise NotImplementedError

    def record(self, ref: JobRef) -> Path:
        """The file on the host in which the job recorded how it ended."""
        raise NotImplementedError

    def corrupt_record(self, ref: JobRef) -> None:
        """The job's record, still naming the job, with an exit code that cannot be read."""
        raise NotImplementedError

    def start_record(self, ref: JobRef) -> Path:
        """The file in which the job (or the submit) recorded that it started."""
        raise NotImplementedError

    # the ways edit_entry can spoil one entry of the poll's answer
    entry_edits: tuple[str, ...] = ()

    def edit_entry(self, out: str, refs: list[JobRef], victim: JobRef, how: str) -> str:
        """The poll's real answer `out` for `refs`, with `victim`'s entry in a form the
        backend's parser does not know, one of `entry_edits`."""
        raise NotImplementedError

    def close(self) -> None:
        for ref in self.submitted:
            self.release(ref)
        self.transport.inner.close()


# -- the direct runner ---------------------------------------------------------------------------
def _processes() -> list[tuple[int, str, int]]:
    """(pid, state, session id) of every process."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            out.append((int(entry), fields[0], int(fields[3])))
    return out


class DirectAdapter(Adapter):
    """The direct runner; its "queue" is the host's processes: a job is the session of its
    wrapper, the process that carries the job's marker and works in the case folder."""
    has_queue = False
    poll_name = "caseflow-status"
    @classmethod
    def open(cls, request, root: Path, transport: str) -> "DirectAdapter":
        if transport == "local":
            return cls(LocalTransport("local", str(root)), root)
        sshd = request.getfixturevalue("sshd")
        return cls(connected(SSHTransport(TransportConfig(**transport_settings(sshd, root)))),
                   root)

    def make_backend(self):
        return DirectBackend(self.transport)

    def on_queue(self, spec: JobSpec) -> list[str]:
        marker, ids = f"{MARK}-{spec.case_id}", []
        for pid, state, _ in _processes():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if state not in "ZX" and marker.encode() in argv and cwd == spec.remote_path:
                ids.append(str(pid))
        return ids

    def _session(self, ref: JobRef) -> list[int]:
        return [pid for pid, state, sid in _processes()
                if sid == int(ref.task_id) and state not in "ZX"]

    def running(self, ref: JobRef) -> bool:
        return self.on_queue(ref) == [ref.task_id]

    def waiting(self, ref: JobRef) -> bool:
        return False

    def ended(self, ref: JobRef) -> bool:
        return not self._session(ref)

    def forget(self, refs: list[JobRef]) -> None:
        """Nothing to forget: the runner knows a job by its records in the case folder."""

    def record(self, ref: JobRef) -> Path:
        return Path(ref.remote_path, ".caseflow", "exit_code")

    def corrupt_record(self, ref: JobRef) -> None:
        self.record(ref).write_text("seven\n")

    def start_record(self, ref: JobRef) -> Path:
        return Path(ref.remote_path, ".caseflow", "pid")

    entry_edits = ("a word the parser does not know", "no line for the job")

    def edit_entry(self, out: str, refs: list[JobRef], victim: JobRef, how: str) -> str:
        n = str(refs.index(victim))
        lines = [line for line in out.split("\n") if line.split(" ", 1)[0] != n]
        return "\n".join(lines if how == "no line for the job" else
                         [*lines, f"{n} exploded into pieces"])

    def close(self) -> None:
        super().close()
        for ref in self.submitted:  # what a failed test left running
            for pid in self._session(ref):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# -- pueue ----------------------------------------------------------------------------------------
class PueueAdapter(Adapter):
    """pueue (a real pueued of the given version per test) over the real sshd."""
    poll_name = "caseflow-pueue-poll"

    def __init__(self, transport, root: Path, daemon: PueueDaemon):
        self.daemon = daemon
        super().__init__(transport, root)

    @classmethod
    def open(cls, request, root: Path, version: str) -> "PueueAdapter":
        sshd = request.getfixturevalue("sshd")
        transport = connected(SSHTransport(TransportConfig(**transport_settings(sshd, root))))
        return cls(transport, root, PueueDaemon(root.parent / "pueue", version).start())

    def make_backend(self):
        return PueueBackend(self.transport, (GroupConfig("gpu_a", 3), GroupConfig("gpu_one", 1)),
                            pueue=str(self.daemon.client))

    def _task(self, ref: JobRef) -> dict | None:
        task = self.daemon.tasks().get(ref.task_id)
        return task if task is not None and task["label"] == ref.label else None

    def on_queue(self, spec: JobSpec) -> list[str]:
        return [tid for tid, task in self.daemon.tasks().items() if task["label"] == spec.label]

    def running(self, ref: JobRef) -> bool:
        task = self._task(ref)
        return task is not None and status_name(task) == "Running"

    def waiting(self, ref: JobRef) -> bool:
        task = self._task(ref)
        return task is not None and status_name(task) == "Queued"

    def ended(self, ref: JobRef) -> bool:
        task = self._task(ref)
        return task is None or status_name(task) == "Done"

    def forget(self, refs: list[JobRef]) -> None:
        """`pueue remove`, as someone tidying the queue does."""
        self.daemon.run("remove", *[r.task_id for r in refs], check=True)
        wait_for(lambda: not set(self.daemon.tasks()) & {r.task_id for r in refs},
                 what="pueue to remove the tasks")

    def record(self, ref: JobRef) -> Path:
        return Path(ref.remote_path, ".caseflow", "pueue-exit")

    def corrupt_record(self, ref: JobRef) -> None:
        self.record(ref).write_text(f"{ref.label} seven\n")

    def start_record(self, ref: JobRef) -> Path:
        return Path(ref.remote_path, ".caseflow", "pueue-job")

    entry_edits = ("a status pueue may have one day", "a task that is not an object")

    def edit_entry(self, out: str, refs: list[JobRef], victim: JobRef, how: str) -> str:
        lines = out.split("\n")
        start = lines.index("@@caseflow status") + 1
        end = next(i for i in range(start, len(lines)) if lines[i].startswith("@@caseflow "))
        data = json.loads("\n".join(lines[start:end]))
        if how == "a task that is not an object":
            data["tasks"][victim.task_id] = ["Running", victim.label]
        else:
            data["tasks"][victim.task_id]["status"] = {"Exploded": {"at": "noon"}}
        return "\n".join([*lines[:start], json.dumps(data), *lines[end:]])

    def close(self) -> None:
        super().close()
        self.daemon.close()


# -- Slurm ----------------------------------------------------------------------------------------
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"}


class SlurmAdapter(Adapter):
    """Slurm: the session's one-node cluster (2 GPUs), over its sshd. gpu_a's jobs ask for no
    GPU; a gpu_one job asks for both, so a second one waits for Resources."""
    poll_name = "caseflow-poll"

    def __init__(self, transport, root: Path, cluster):
        self.cluster = cluster
        super().__init__(transport, root)

    @classmethod
    def open(cls, request, root: Path, _=None) -> "SlurmAdapter":
        cluster = request.getfixturevalue("slurm_cluster")
        transport = connected(SSHTransport(TransportConfig(**cluster.transport_settings(root))))
        return cls(transport, root, cluster)

    def make_backend(self):
        return SlurmBackend(self.transport, BackendConfig(
            kind="slurm", command="true", slurm=SlurmOptions(gpus_per_job=0),
            slurm_groups=(("gpu_one", SlurmOptions(gpus_per_job=2)),)))

    def _state(self, ref: JobRef) -> str | None:
        """The job's state as squeue says, else as the completion log (sacct -c) says."""
        res = self.cluster.run(["squeue", "-h", "-t", "all", "-j", ref.task_id, "-o", "%j|%T"])
        for line in res.stdout.splitlines():
            name, _, state = line.partition("|")
            if name == ref.label:
                return state.strip()
        res = self.cluster.run(["sacct", "-c", "-X", "-P", "-n", "-j", ref.task_id,
                                "-o", "JobName,State"], check=True)
        states = [line.split("|")[1].split()[0] for line in res.stdout.splitlines()
                  if line.split("|")[0] == ref.label]
        return states[-1] if states else None

    def on_queue(self, spec: JobSpec) -> list[str]:
        res = self.cluster.run(["squeue", "-h", "-t", "all", f"--name={spec.label}", "-o", "%i"],
                               check=True)
        return res.stdout.split()

    def running(self, ref: JobRef) -> bool:
        return self._state(ref) == "RUNNING"

    def waiting(self, ref: JobRef) -> bool:
        return self._state(ref) == "PENDING"

    def ended(self, ref: JobRef) -> bool:
        state = self._state(ref)
        return state is not None and state not in ACTIVE

    def forget(self, refs: list[JobRef]) -> None:
        """squeue forgets a finished job after MinJobAge (a purge pass every 10 s); its line in
        the completion log goes as a purge of old accounting records would take it."""
        ids = ",".join(r.task_id for r in refs)
        wait_for(lambda: not self.cluster.run(["squeue", "-h", "-t", "all", "-j", ids,
                                               "-o", "%i"]).stdout.split(),
                 2 * DEADLINE, interval=0.2, what="Slurm to forget the jobs (MinJobAge)")
        for r in refs:
            self.cluster.purge_completion_record(r.task_id, r.label)

    def record(self, ref: JobRef) -> Path:
        return Path(ref.remote_path, ".caseflow", "slurm-exit_code")

    def corrupt_record(self, ref: JobRef) -> None:
        self.record(ref).write_text(f"{ref.task_id} seven\n")

    def start_record(self, ref: JobRef) -> Path:
        return Path(ref.remote_path, ".caseflow", "slurm-job")

    entry_edits = ("a state Slurm may have one day", "a line without its job id")

    def edit_entry(self, out: str, refs: list[JobRef], victim: JobRef, how: str) -> str:
        """The victim's squeue line changed (section "squeue" of scripts/slurm-poll.sh)."""
        lines, section = out.split("\n"), None
        for i, line in enumerate(lines):
            if line.startswith("@@caseflow "):
                section = line.split()[1]
            elif section == "squeue" and line.split("|")[0].strip() == victim.task_id:
                fields = line.split("|")
                fields[0 if how == "a line without its job id" else 1] = \
                    " " * len(fields[0]) if how == "a line without its job id" else "EXPLODED"
                lines[i] = "|".join(fields)
        return "\n".join(lines)

    def close(self) -> None:
        super().close()
        res = self.cluster.run(["squeue", "-h", "-t", "all", "-o", "%i|%j"], check=True)
        mine = [line.split("|")[0] for line in res.stdout.splitlines()
                if line.split("|")[1].startswith(f"caseflow-{self.token}-")]
        if mine:
            self.cluster.run(["scancel", *mine])
            wait_for(lambda: not [ln for ln in self.cluster.run(
                ["squeue", "-h", "-t", "all", "-j", ",".join(mine), "-o", "%T"]).stdout.split()
                if ln in ACTIVE], DEADLINE, interval=0.1, what="the test's jobs to end")


# -- Grid Engine ----------------------------------------------------------------------------------
def qstat_jobs(cluster) -> dict[str, tuple[str, str]]:
    """{job id: (name, state letters)} of every job qstat lists, of every user: Grid Engine's
    own `qstat -u '*' -xml` in the cluster's namespace, read with ElementTree here."""
    res = cluster.run(["qstat", "-u", "*", "-xml"], check=True)
    return {e.findtext("JB_job_number"): (e.findtext("JB_name"), e.findtext("state"))
            for e in ET.fromstring(res.stdout).iter("job_list")}


class GridEngineAdapter(Adapter):
    """Grid Engine: the session's one host (tests/gridengine_fixtures.py), over its sshd.
    gpu_a's jobs go to all.q (8 slots); gpu_one's to one.q (1 slot), so a second one waits."""
    poll_name = "caseflow-qstat"

    def __init__(self, transport, root: Path, cluster):
        self.cluster = cluster
        super().__init__(transport, root)

    @classmethod
    def open(cls, request, root: Path, _=None) -> "GridEngineAdapter":
        cluster = request.getfixturevalue("gridengine_cluster")
        transport = connected(SSHTransport(TransportConfig(**cluster.transport_settings(root))))
        return cls(transport, root, cluster)

    def make_backend(self):
        # the test cluster writes accounting at once: a record missing is missing for good
        return GridEngineBackend(self.transport, BackendConfig(
            kind="gridengine", command="true", accounting_wait_seconds=0.0,
            gridengine=GridEngineOptions(queue="all.q"),
            gridengine_groups=(("gpu_one", GridEngineOptions(queue="one.q")),)))

    def _state(self, ref: JobRef) -> str | None:
        """The job's state letters while qstat lists it (under the case's label)."""
        name, state = qstat_jobs(self.cluster).get(ref.task_id, (None, None))
        return state if name == ref.label else None

    def on_queue(self, spec: JobSpec) -> list[str]:
        return [jid for jid, (name, _) in qstat_jobs(self.cluster).items() if name == spec.label]

    def running(self, ref: JobRef) -> bool:
        return self._state(ref) == "r"

    def waiting(self, ref: JobRef) -> bool:
        return self._state(ref) == "qw"

    def ended(self, ref: JobRef) -> bool:
        return self._state(ref) is None

    def forget(self, refs: list[JobRef]) -> None:
        """qstat forgets a job as it ends; its accounting record goes as a rotation of the
        accounting file takes it."""
        wait_for(lambda: not {r.task_id for r in refs} & set(qstat_jobs(self.cluster)),
                 DEADLINE, interval=0.1, what="qstat to forget the jobs")
        for r in refs:
            self.cluster.purge_accounting(r.task_id, r.label)

    def record(self, ref: JobRef) -> Path:
        return Path(ref.remote_path, ".caseflow", "gridengine-exit")

    def corrupt_record(self, ref: JobRef) -> None:
        self.record(ref).write_text(f"{ref.task_id} seven\n")

    def start_record(self, ref: JobRef) -> Path:
        return Path(ref.remote_path, ".caseflow", "gridengine-job")

    entry_edits = ("a state Grid Engine may have one day", "an entry without its job number")

    def edit_entry(self, out: str, refs: list[JobRef], victim: JobRef, how: str) -> str:
        """The victim's <job_list> in the qstat section (scripts/gridengine-poll.sh) changed."""
        lines = out.split("\n")
        at = lines.index(f"      <JB_job_number>{victim.task_id}</JB_job_number>")
        if how == "an entry without its job number":
            del lines[at]
        else:
            end = next(i for i in range(at, len(lines)) if "</job_list>" in lines[i])
            state = next(i for i in range(at, end) if "<state>" in lines[i])
            lines[state] = "      <state>Zr</state>"
        return "\n".join(lines)

    def close(self) -> None:
        super().close()
        mine = [jid for jid, (name, _) in qstat_jobs(self.cluster).items()
                if name.startswith(f"caseflow-{self.token}-")]
        if mine:
            self.cluster.run(["qdel", *mine])
            wait_for(lambda: not set(mine) & set(qstat_jobs(self.cluster)), DEADLINE,
                     interval=0.1, what="the test's jobs to end")


# name -> (adapter, its variant): the suite's parametrization
ADAPTERS = {
    "direct-local": (DirectAdapter, "local"),
    "direct-ssh": (DirectAdapter, "ssh"),
    "pueue-3.4.1": (PueueAdapter, "3.4.1"),
    "pueue-4.0.4": (PueueAdapter, "4.0.4"),
    "slurm": (SlurmAdapter, None),
    "gridengine": (GridEngineAdapter, None),
}
