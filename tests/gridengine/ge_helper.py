"""What the tests in tests/gridengine share: the backend under test over SSH, the case folders
of one test, and Grid Engine's own view of its jobs (commands inside the cluster's namespace)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from backend_adapters import connected
from caseflow.backends import JobRef, JobSpec
from caseflow.backends.gridengine import GridEngineBackend
from caseflow.backends.gridengine_options import GridEngineConfig, GridEngineOptions
from caseflow.config import TransportConfig
from caseflow.transports.ssh import SSHTransport
from harness import DEADLINE, wait_for

HOLD = "while [ ! -e release ]; do sleep 0.05; done"


class GridEngine:
    """The backend under test over SSH, the case folders of one test, and Grid Engine's own
    view of the jobs (inside the cluster's namespace)."""

    def __init__(self, cluster, transport, root: Path):
        self.cluster = cluster
        self.transport = transport
        self.root = root
        self.token = os.urandom(3).hex()  # job names unique in the session
        self.labels: list[str] = []

    def backend(self, groups: dict | None = None, accounting_wait: float = 0.0,
                **options) -> GridEngineBackend:
        """`accounting_wait`: 0 by default, as the test cluster writes a job's accounting
        record at once (a missing one is missing for good)."""
        base = GridEngineOptions(**{"queue": "all.q", **options})
        return GridEngineBackend(self.transport, GridEngineConfig(
            kind="gridengine", command="true", accounting_wait_seconds=accounting_wait,
            gridengine=base,
            gridengine_groups=tuple((g, GridEngineOptions(**{**base.__dict__, **o}))
                                    for g, o in (groups or {}).items())))

    def spec(self, case_id: int, command, *, group: str = "gpu_a", env=None) -> JobSpec:
        folder = self.root / f"case {case_id}"
        (folder / ".caseflow").mkdir(parents=True, exist_ok=True)  # as the upload leaves it
        label = f"caseflow-{self.token}-{case_id}-1"
        self.labels.append(label)
        return JobSpec(case_id=case_id, label=label, remote_path=str(folder), group=group,
                       command=command, env={"CASEFLOW_CASE_ID": str(case_id), **(env or {})})

    @staticmethod
    def ref(spec: JobSpec, task_id: str) -> JobRef:
        return JobRef(spec.case_id, task_id, spec.label, spec.remote_path)

    # -- Grid Engine's own view ----------------------------------------------------------------
    def jobs(self) -> dict[str, tuple[str, str]]:
        """{id: (name, state letters)} of every job qstat lists, of every user."""
        res = self.cluster.run(["qstat", "-u", "*", "-xml"], check=True)
        return {e.findtext("JB_job_number"): (e.findtext("JB_name"), e.findtext("state"))
                for e in ET.fromstring(res.stdout).iter("job_list")}

    def state(self, job_id: str) -> str | None:
        return self.jobs().get(job_id, (None, None))[1]

    def wait_state(self, job_id: str, state: str | None) -> None:
        wait_for(lambda: self.state(job_id) == state, DEADLINE, interval=0.1,
                 what=f"job {job_id} in state {state}")

    def records(self, job_id: str) -> list[dict[str, str]]:
        """qacct's records of the id, each {field: value}."""
        res = self.cluster.run(["qacct", "-j", job_id])
        out: list[dict[str, str]] = []
        for line in res.stdout.splitlines():
            if line.startswith("===="):
                out.append({})
            elif out and line.strip():
                key, _, value = line.partition(" ")
                out[-1][key] = value.strip()
        return out

    def qsub(self, *args: str) -> str:
        """A job of someone else's, submitted in the namespace (not through caseflow)."""
        return self.cluster.run(["qsub", "-terse", "-o", "/dev/null", "-j", "y", *args],
                                check=True).stdout.strip()

    def close(self) -> None:
        mine = [jid for jid, (name, _) in self.jobs().items() if name in self.labels]
        if mine:
            self.cluster.run(["qdel", *mine])
            wait_for(lambda: not set(mine) & set(self.jobs()), DEADLINE, interval=0.1,
                     what="the test's jobs to end")


def connect(cluster, root: Path) -> SSHTransport:
    """caseflow's SSH transport to the cluster's host (remote root `root`), connected."""
    return connected(SSHTransport(TransportConfig(**cluster.transport_settings(root))))
