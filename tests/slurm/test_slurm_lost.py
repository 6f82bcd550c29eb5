"""Infrastructure loss against the real Slurm cluster (issue 28): a job Slurm took away (its node
failed, a higher-priority job preempted it) is LOST with the cause; a job Slurm requeued itself
is followed under the same id through pending again; a job that failed by itself (its exit
code, its time limit, a person's scancel) stays a FAILURE.

The session's cluster has the partitions `low` (PreemptMode=CANCEL), `low-requeue`
(PreemptMode=REQUEUE) and `high` (preempts both), see tests/slurm_cluster.py. The backend's
`status()` of the real job is what is asserted; Slurm's own view is read inside the namespace.
"""

from pathlib import Path

import pytest

from caseflow.backends import FAILURE, LOST, RUNNING, SUCCESS, JobStatus
from caseflow.backends.slurm_status import squeue_outcome
from harness import wait_for
from test_slurm_backend import DEADLINE, HOLD, ended, ref, slurm, until  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
# the job notes each of its starts (a requeued job starts again in the same folder)
NOTED_HOLD = f"echo started >> starts.txt; {HOLD}"


def started(spec, times: int = 1) -> None:
    """Until the job's command has started `times` times (squeue says RUNNING a moment before
    the batch script runs)."""
    starts = Path(spec.remote_path) / "starts.txt"
    wait_for(lambda: starts.exists() and starts.read_text() == "started\n" * times, DEADLINE,
             what=f"the job's start number {times}")


def squeue(cluster, job_id: str) -> dict[str, str]:
    """Slurm's own view of one job: state, reason, restart count."""
    out = cluster.run(["squeue", "-h", "-t", "all", "-j", job_id, "-O",
                       "State:|,Reason:|,RestartCnt:"], check=True).stdout.strip()
    state, reason, restarts = out.split("|")
    return {"state": state, "reason": reason, "restarts": restarts}


def high_priority_job(cluster, tmp_path: Path, gpus: int = 1) -> str:
    """A job of the partition `high`, which preempts the low partitions' jobs for its GPU."""
    return cluster.run(["sbatch", "--parsable", "-p", "high", f"--gres=gpu:{gpus}",
                        f"--chdir={tmp_path}", "-o", "/dev/null", "-J", "urgent",
                        "--wrap", "sleep 300"], check=True).stdout.strip()


def make_eligible(cluster, job_id: str) -> None:
    """A job Slurm requeued may start again only after AuthInfo's cred_expire (120 s): make it
    eligible sooner, as an operator would (`scontrol update ... starttime=`). Not `now`: the
    node refuses a credential made in the same second as it revoked the job's earlier one
    ("Job credential revoked", the job then FAILS): 2 s on, Slurm starts it itself."""
    assert squeue(cluster, job_id)["state"] == "PENDING"  # its earlier start is cleaned up
    cluster.run(["scontrol", "update", f"jobid={job_id}", "starttime=now+2"], check=True)


def wait_node_up(cluster) -> None:
    """Until the node is up again: resumed if Slurm has not brought it back itself
    (ReturnToService=2 returns a node set DOWN once its slurmd answers)."""
    def up():
        state = cluster.run(["sinfo", "-h", "-p", "debug", "-o", "%T"]).stdout.strip()
        if state.startswith(("down", "drain")):
            cluster.run(["scontrol", "update", f"nodename={cluster.node}", "state=resume"])
        return state in ("idle", "mixed", "allocated")
    wait_for(up, DEADLINE, interval=0.2, what=f"node {cluster.node} to be up again")


@pytest.fixture
def node_back(slurm_cluster):
    """The node's name; after the test, the node is up again, whatever the test did to it."""
    yield slurm_cluster.node
    wait_node_up(slurm_cluster)


# -- preempted ---------------------------------------------------------------------------------
def test_a_job_preempted_by_a_higher_priority_job_is_lost_with_the_cause(
        slurm_cluster, slurm, tmp_path):
    backend = slurm.backend(gpus_per_job=2, partition="low")  # both GPUs: any job preempts it
    spec = slurm.spec(100, NOTED_HOLD)
    r = ref(spec, backend.submit(spec))
    until(backend, [r], lambda a: a[100].detail.startswith("RUNNING"), "the low job to run")
    started(spec)
    urgent = high_priority_job(slurm_cluster, tmp_path)
    node = slurm_cluster.node
    cause = JobStatus(LOST, f"preempted by a higher-priority job on node {node} (Slurm PREEMPTED)")
    assert ended(backend, r) == cause
    assert squeue(slurm_cluster, r.task_id)["state"] == "PREEMPTED"
    assert squeue(slurm_cluster, urgent)["state"] == "RUNNING"
    # once Slurm has forgotten it, sacct's record says the same (and names the node)
    wait_for(lambda: r.task_id not in slurm.queue(), DEADLINE, interval=0.2,
             what="Slurm to forget the preempted job (MinJobAge, a purge every 10 s)")
    assert slurm.accounted(r.task_id) == [f"{r.task_id}|{spec.label}|PREEMPTED|0:0"]
    assert backend.status([r])[100] == cause
    assert (Path(spec.remote_path) / "starts.txt").read_text() == "started\n"


def test_a_job_slurm_requeues_is_followed_through_pending_again_to_its_end(
        slurm_cluster, slurm, tmp_path):
    backend = slurm.backend(gpus_per_job=2, partition="low-requeue")
    spec = slurm.spec(101, NOTED_HOLD)
    r = ref(spec, backend.submit(spec))
    until(backend, [r], lambda a: a[101].detail.startswith("RUNNING"), "the low job to run")
    started(spec)
    urgent = high_priority_job(slurm_cluster, tmp_path)

    # preempted, back in the queue under the same id: RUNNING (it keeps its slot), waiting.
    # (First COMPLETING while Slurm kills it: RUNNING, not waiting, its processes may live.)
    again = until(backend, [r], lambda a: a[101].detail.startswith("PENDING"),
                  "caseflow to see the job pending again")[101]
    assert (again.outcome, again.waiting) == (RUNNING, True), again
    assert again.detail.startswith("PENDING") and \
        again.detail.endswith(", requeued by Slurm (1)"), again.detail
    seen = squeue(slurm_cluster, r.task_id)
    assert seen["state"] == "PENDING" and seen["restarts"] == "1", seen
    # it stays so while Slurm keeps it back (cred_expire, then the high job's GPUs)
    for _ in range(3):
        status = backend.status([r])[101]
        assert (status.outcome, status.waiting) == (RUNNING, True), status

    slurm_cluster.run(["scancel", urgent], check=True)
    make_eligible(slurm_cluster, r.task_id)
    node = slurm_cluster.node
    running = until(backend, [r], lambda a: a[101].detail.startswith("RUNNING"),
                    "the requeued job to run again")[101]
    assert running == JobStatus(RUNNING, f"RUNNING on {node}, gres:gpu:2, requeued by Slurm (1)")
    assert not running.waiting and running.started is not None
    started(spec, 2)
    (Path(spec.remote_path) / "release").touch()
    assert ended(backend, r) == JobStatus(
        SUCCESS, f"slurm job {r.task_id} COMPLETED, exit code 0", 0)
    assert (Path(spec.remote_path) / ".caseflow" / "slurm-job").read_text() == \
        f"{spec.label} {r.task_id}\n"


# -- a node fails ------------------------------------------------------------------------------
def test_a_node_set_down_under_a_running_job_loses_it_or_slurm_requeues_it(
        slurm_cluster, slurm, node_back):
    """Two jobs on the node when it goes DOWN: the one that may not be requeued ends NODE_FAIL
    (LOST, naming the node); the other (Slurm's default, JobRequeue=1) goes back to the queue
    and runs again once the node is back."""
    kept = slurm.backend(gpus_per_job=0, extra_args=("--no-requeue",))
    requeued = slurm.backend(gpus_per_job=0)
    lost_spec, requeued_spec = slurm.spec(102, NOTED_HOLD), slurm.spec(103, NOTED_HOLD)
    lost = ref(lost_spec, kept.submit(lost_spec))
    back = ref(requeued_spec, requeued.submit(requeued_spec))
    until(kept, [lost, back], lambda a: all(s.detail.startswith("RUNNING") for s in a.values()),
          "both jobs to run")
    started(lost_spec)
    started(requeued_spec)
    slurm_cluster.run(["scontrol", "update", f"nodename={node_back}", "state=down",
                       "reason=test"], check=True)

    assert ended(kept, lost) == JobStatus(LOST, f"node {node_back} failed (Slurm NODE_FAIL)")
    assert squeue(slurm_cluster, lost.task_id)["state"] == "NODE_FAIL"
    status = until(requeued, [back], lambda a: "requeued by Slurm (1)" in a[103].detail,
                   "the other job to be requeued")[103]
    assert (status.outcome, status.waiting) == (RUNNING, True), status

    wait_node_up(slurm_cluster)
    make_eligible(slurm_cluster, back.task_id)
    until(requeued, [back], lambda a: a[103].detail.startswith("RUNNING"),
          "the requeued job to run again")
    started(requeued_spec, 2)
    (Path(requeued_spec.remote_path) / "release").touch()
    assert ended(requeued, back).outcome == SUCCESS


# -- the job's own ends are no loss --------------------------------------------------------------
def test_a_timeout_an_exit_code_and_a_persons_scancel_are_failures_not_losses(
        slurm_cluster, slurm):
    """Over its time limit (1 minute: Slurm's smallest; it ends it within 30 s after), exit 3,
    cancelled by a person: each is the job's own end."""
    limited = slurm.backend(gpus_per_job=0, time="1")
    plain = slurm.backend(gpus_per_job=0)
    timed = slurm.spec(104, HOLD)
    t = ref(timed, limited.submit(timed))
    three, cancelled = slurm.spec(105, "exit 3"), slurm.spec(106, HOLD)
    e, c = ref(three, plain.submit(three)), ref(cancelled, plain.submit(cancelled))
    until(plain, [c], lambda a: a[106].detail.startswith("RUNNING"), "the job to run")
    slurm_cluster.run(["scancel", c.task_id], check=True)

    assert ended(plain, e) == JobStatus(FAILURE, f"slurm job {e.task_id} FAILED, exit code 3", 3)
    status = ended(plain, c)
    assert status.outcome == FAILURE and \
        status.detail.startswith(f"slurm job {c.task_id} CANCELLED"), status
    answers = wait_for(lambda: (a := limited.status([t]))[104].outcome != RUNNING and a,
                       150, interval=0.5, what="the job to reach its time limit (60-90 s)")
    assert answers[104].outcome == FAILURE, answers[104]
    assert answers[104].detail.startswith(f"slurm job {t.task_id} TIMEOUT"), answers[104]
    assert squeue(slurm_cluster, t.task_id)["state"] == "TIMEOUT"


# -- reading the ends (no cluster needed) ----------------------------------------------------------
@pytest.mark.parametrize("state, nodes, cause", [
    ("NODE_FAIL", "c1", (LOST, "node c1 failed (Slurm NODE_FAIL)")),
    ("NODE_FAIL", "c[1-4]", (LOST, "one of nodes c[1-4] failed (Slurm NODE_FAIL)")),
    ("BOOT_FAIL", "c2", (LOST, "node c2 failed to boot (Slurm BOOT_FAIL)")),
    ("BOOT_FAIL", "", (LOST, "its node failed to boot (Slurm BOOT_FAIL)")),
    ("PREEMPTED", "c1,c3", (LOST, "preempted by a higher-priority job on nodes c1,c3 "
                                  "(Slurm PREEMPTED)")),
    ("PREEMPTED", "(null)", (LOST, "preempted by a higher-priority job on its node "
                                   "(Slurm PREEMPTED)")),
    ("OUT_OF_MEMORY", "c1", (FAILURE, "slurm job 8 OUT_OF_MEMORY")),
    ("TIMEOUT", "c1", (FAILURE, "slurm job 8 TIMEOUT, signal 15")),
    ("CANCELLED", "c1", (FAILURE, "slurm job 8 CANCELLED, signal 15")),
    ("DEADLINE", "c1", (FAILURE, "slurm job 8 DEADLINE")),
])
def test_which_ends_are_the_infrastructures(state, nodes, cause):
    exit_code = {"TIMEOUT": "15", "CANCELLED": "15"}.get(state, "0")
    status = squeue_outcome("8", {"state": state, "exit_code": exit_code, "nodes": nodes})
    assert (status.outcome, status.detail) == cause
    assert status.exit_code is None


def test_a_requeued_jobs_restart_count_is_in_its_detail():
    pending = squeue_outcome("8", {"state": "PENDING", "reason": "BeginTime", "restarts": "2"})
    assert pending == JobStatus(RUNNING, "PENDING (BeginTime), requeued by Slurm (2)")
    assert pending.waiting
    assert squeue_outcome("8", {"state": "RUNNING", "reason": "None", "nodes": "c1",
                                "gres": "N/A", "restarts": "1"}).detail == \
        "RUNNING on c1, requeued by Slurm (1)"
    assert squeue_outcome("8", {"state": "RUNNING", "reason": "None", "nodes": "c1",
                                "restarts": "0"}).detail == "RUNNING on c1"
