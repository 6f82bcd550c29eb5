"""A Slurm job is over only once its command is gone (issue 28, found by a review): the command
here traps SIGTERM and goes on, as checkpointing GPU codes do. caseflow's batch script
(slurm-job.sh) used to die on the TERM Slurm sends at a preemption or a cancel; the test
cluster's proctrack/linuxproc then no longer tracked the command it left, and Slurm said the
job ended (PREEMPTED, CANCELLED) and gave its GPUs to the next job, caseflow's rerun among
them, while the command ran on. The script now outlives the TERM: the job stays COMPLETING
until its command ends or Slurm's KillWait has passed and it was killed.

(A node set DOWN by hand while it still runs the job: Slurm ends the job NODE_FAIL at once and
sends TERM only; a command that ignores it runs on. That is Slurm's behaviour, documented in
docs/backends.md, not tested here.)"""

from pathlib import Path

import pytest

from caseflow.backends import LOST, RUNNING
from harness import wait_for
from test_slurm_backend import DEADLINE, ended, ref, until  # noqa: F401
from test_slurm_backend import slurm  # noqa: F401 (fixture)
from test_slurm_lost import high_priority_job, make_eligible  # noqa: F401

pytestmark = pytest.mark.slow


def trapping(marker: str) -> str:
    """A command that checkpoints on SIGTERM (notes it) and goes on; `marker` names it."""
    return (f": {marker}; echo started >> starts.txt; trap 'echo TERM >> term.txt' TERM; "
            "while :; do sleep 0.1; done")


def alive(cluster, marker: str) -> list[int]:
    """The processes in the cluster's namespace running the command marked `marker`."""
    out = []
    for pid in cluster.pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f": {marker};".encode() in cmd:
            out.append(pid)
    return out


def running(cluster, spec, marker):
    wait_for(lambda: (Path(spec.remote_path) / "starts.txt").exists(), DEADLINE,
             what="the command to start")
    assert alive(cluster, marker)


def test_preempted_is_lost_only_once_the_command_is_gone(slurm_cluster, slurm, tmp_path):
    backend = slurm.backend(gpus_per_job=2, partition="low")
    spec = slurm.spec(200, trapping("brk-200"))
    r = ref(spec, backend.submit(spec))
    running(slurm_cluster, spec, "brk-200")
    high_priority_job(slurm_cluster, tmp_path, gpus=2)
    status = ended(backend, r)
    assert status.outcome == LOST, status
    # caseflow now reruns the case (a new job on the GPUs Slurm just gave the urgent job)
    assert alive(slurm_cluster, "brk-200") == [], \
        f"{status.detail}, yet the preempted job's command still runs"


def test_a_requeued_job_starts_again_only_once_its_first_start_is_gone(
        slurm_cluster, slurm, tmp_path):
    backend = slurm.backend(gpus_per_job=2, partition="low-requeue")
    spec = slurm.spec(203, trapping("brk-203"))
    r = ref(spec, backend.submit(spec))
    running(slurm_cluster, spec, "brk-203")
    urgent = high_priority_job(slurm_cluster, tmp_path, gpus=2)
    until(backend, [r], lambda a: a[203].detail.startswith("PENDING"), "the job to be requeued")
    slurm_cluster.run(["scancel", urgent], check=True)
    make_eligible(slurm_cluster, r.task_id)
    starts = Path(spec.remote_path) / "starts.txt"
    wait_for(lambda: starts.read_text() == "started\n" * 2, DEADLINE, what="the second start")
    # the second start is its wrapper and its command (the wrapper's argv holds the command)
    assert len(alive(slurm_cluster, "brk-203")) == 2, \
        "the requeued job's first start still runs beside its second, in the same folder"


def test_a_cancelled_job_ends_only_once_the_command_is_gone(slurm_cluster, slurm):
    """caseflow's own cancel (scancel, TERM first): the case ends and frees its slot when the
    queue says CANCELLED."""
    backend = slurm.backend(gpus_per_job=2)
    spec = slurm.spec(204, trapping("brk-204"))
    r = ref(spec, backend.submit(spec))
    running(slurm_cluster, spec, "brk-204")
    backend.cancel(r)
    status = ended(backend, r)
    assert status.outcome != RUNNING
    assert alive(slurm_cluster, "brk-204") == [], \
        f"{status.detail}, yet the cancelled job's command still runs"


@pytest.mark.parametrize("force", [False, True])
def test_a_cancel_while_slurm_requeues_the_job_ends_it(slurm_cluster, slurm, tmp_path, force):
    """The case is cancelled in the moment Slurm requeues its preempted job (COMPLETING, the
    restart count already 1): caseflow's scancel must end it, not leave it pending again."""
    backend = slurm.backend(gpus_per_job=2, partition="low-requeue")
    n = 205 + force
    spec = slurm.spec(n, "echo started >> starts.txt; sleep 300")
    r = ref(spec, backend.submit(spec))
    wait_for(lambda: (Path(spec.remote_path) / "starts.txt").exists(), DEADLINE,
             what="the command to start")
    high_priority_job(slurm_cluster, tmp_path, gpus=2)
    seen = until(backend, [r], lambda a: "requeued by Slurm" in a[n].detail,
                 "Slurm to requeue the job")[n]
    backend.cancel(r, force=force)
    status = ended(backend, r)
    assert status.outcome != RUNNING, (seen, status)
