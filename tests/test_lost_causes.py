"""What took a lost job away, as the `cause` label of caseflow_reruns: read from the details
the backends really write (their own functions), with host and node names that hold the words
a careless reading would take for a cause (a review: "node01 rebooted" was counted as a node's
failure)."""

import pytest

from caseflow.backends import LOST, LOST_CAUSES, JobRef, lost_cause
from caseflow.backends.direct import parse_status
from caseflow.backends.slurm_status import LOST_ENDS, _lost

JOB = JobRef(case_id=1, task_id="42", label="caseflow-x-1-1", remote_path="/r/1-a")


@pytest.mark.parametrize("host", ["node01", "gpu-node-3", "preempt-box", "fail-boot"])
def test_a_reboot_of_the_direct_runners_host_is_a_restart_whatever_its_name(host):
    status = parse_status("0 rebooted\n", [JOB], host=host)[1]
    assert status.outcome == LOST and host in status.detail
    assert lost_cause(status.detail) == "host_restarted"


@pytest.mark.parametrize("state, cause", [("NODE_FAIL", "node_failed"),
                                          ("BOOT_FAIL", "node_failed"),
                                          ("PREEMPTED", "preempted")])
@pytest.mark.parametrize("nodes", ["node01", "c[1-4]", "reboot-1", ""])
def test_slurms_ends_by_their_state_whatever_the_nodes_are_called(state, cause, nodes):
    status = _lost(state, nodes)
    assert status.outcome == LOST
    assert lost_cause(status.detail) == cause


def test_every_lost_end_of_slurm_has_a_cause_of_its_own():
    assert {lost_cause(_lost(s, "c1").detail) for s in LOST_ENDS} == {"node_failed", "preempted"}
    assert "processes_gone" in LOST_CAUSES and lost_cause("whatever else") == "processes_gone"


def test_pueues_lost_detail_carries_its_mark():
    """pueue's LOST detail is written in its backend's judgement of a task (many inputs); its
    words are held to the mark the cause is read by."""
    import inspect

    from caseflow.backends import LOST_MARKS, pueue

    text = " ".join(inspect.getsource(pueue).split())
    assert " ".join(LOST_MARKS["host_restarted"][1].split()) in text.replace('" "', "")
