"""Breaker tests for issue 28 (Slurm): a job Slurm reports as ended (PREEMPTED, NODE_FAIL,
CANCELLED) while its command still runs, so that caseflow's rerun (or the next case on the
slot) runs beside it. The command here traps SIGTERM, as checkpointing GPU codes do.

caseflow's batch script (slurm-job.sh) runs the command as a child and dies on SIGTERM at
once (no trap); the test cluster's ProctrackType=proctrack/linuxproc then no longer tracks the
orphaned command, and Slurm reports the end (and hands out the GPUs) while it runs on. For a
node set DOWN Slurm does not even wait for the node's answer (any proctrack)."""

from pathlib import Path

import pytest

from caseflow.backends import LOST, RUNNING
from harness import wait_for
from test_slurm_backend import DEADLINE, ended, ref, until  # noqa: F401
from test_slurm_backend import slurm  # noqa: F401 (fixture)
from test_slurm_lost import high_priority_job, make_eligible, node_back  # noqa: F401

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


def test_node_fail_is_lost_only_once_the_command_is_gone(slurm_cluster, slurm, node_back):
    backend = slurm.backend(gpus_per_job=2, extra_args=("--no-requeue",))
    spec = slurm.spec(201, trapping("brk-201"))
    r = ref(spec, backend.submit(spec))
    running(slurm_cluster, spec, "brk-201")
    slurm_cluster.run(["scontrol", "update", f"nodename={node_back}", "state=down",
                       "reason=test"], check=True)
    status = ended(backend, r)
    assert status.outcome == LOST, status
    # the rerun: the same case's next job gets the same two GPUs at once (ReturnToService=2)
    rerun = slurm.spec(202, 'echo "$CUDA_VISIBLE_DEVICES" > gpus.txt; sleep 300')
    slurm.backend(gpus_per_job=2).submit(rerun)
    wait_for(lambda: (Path(rerun.remote_path) / "gpus.txt").exists(), DEADLINE,
             what="the rerun to start")
    assert alive(slurm_cluster, "brk-201") == [], (
        f"{status.detail}, the rerun runs on GPUs "
        f"{(Path(rerun.remote_path) / 'gpus.txt').read_text().strip()}, and the lost job's "
        "command still runs beside it")


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


def test_a_requeued_job_the_node_refuses_to_start_again_is_not_the_jobs_failure(
        slurm_cluster, slurm, tmp_path):
    """An operator makes a requeued job eligible at once (`scontrol update starttime=now`, as
    tests/slurm_cluster.py's docstring suggests): the node refuses the new credential ("Job
    credential revoked") and Slurm ends the job FAILED, exit code 1, its command never started
    again. That is the infrastructure's doing, not the job's."""
    backend = slurm.backend(gpus_per_job=2, partition="low-requeue")
    spec = slurm.spec(207, "echo started >> starts.txt; sleep 300")
    r = ref(spec, backend.submit(spec))
    starts = Path(spec.remote_path) / "starts.txt"
    wait_for(starts.exists, DEADLINE, what="the command to start")
    urgent = high_priority_job(slurm_cluster, tmp_path, gpus=2)
    until(backend, [r], lambda a: a[207].detail.startswith("PENDING"), "the job to be requeued")
    slurm_cluster.run(["scancel", urgent], check=True)
    slurm_cluster.run(["scontrol", "update", f"jobid={r.task_id}", "starttime=now"], check=True)
    status = ended(backend, r)
    # Slurm itself: FAILED|NonZeroExitCode|256|1 (restart count 1)
    assert starts.read_text() == "started\n"  # the command never ran a second time
    assert status.outcome != "failure", status
