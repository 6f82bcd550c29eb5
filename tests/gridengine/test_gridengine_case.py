"""Cases through the caseflow daemon (harness.Workspace, in this process), over SSH, on the real
one-host Grid Engine: upload, qsub, the poll, the results and the job's log home."""

from pathlib import Path

import pytest
from ge_helper import GridEngine

from harness import JOB

pytestmark = pytest.mark.slow


def test_cases_run_as_grid_engine_jobs_and_their_results_come_home(ws, gridengine_cluster):
    ws.write_config(
        transport=gridengine_cluster.transport_settings(ws.remote),
        groups={"gpu_a": {"slots": 2, "devices": [0, 1]}, "gpu_b": {"slots": 1}},
        backend={"kind": "gridengine", "command": JOB.replace("{ctl}", str(ws.ctl)),
                 "queue": "all.q", "groups": {"gpu_b": {"queue": "one.q"}}})
    ws.start()
    ws.drop_case("brain 0001 it's")
    ws.drop_case("brain_0002", exit_code=3, group="gpu_b")
    good = ws.wait_state("brain 0001 it's", "success")
    bad = ws.wait_state("brain_0002", "failure")
    ws.stop()

    results = ws.root / "results" / "brain 0001 it's"
    assert (results / "output" / "result.txt").read_text() == f"result of {good.id}\n"
    assert "job of case" in (results / "caseflow-job.log").read_text()
    env = (results / "job_env.txt").read_text().splitlines()
    assert "CASEFLOW_CASE_NAME=brain 0001 it's" in env
    assert [v for v in env if v.startswith("CUDA_VISIBLE_DEVICES=")] in \
        (["CUDA_VISIBLE_DEVICES=0"], ["CUDA_VISIBLE_DEVICES=1"]), env
    assert "exit code 3" in bad.reason and bad.exit_code == 3, bad
    assert "job of case" in (ws.root / "results" / "brain_0002" / "caseflow-job.log").read_text()

    # Grid Engine ran one job per case, named after it, in the group's queue
    view = GridEngine(gridengine_cluster, None, ws.remote)
    instance = ws.store.instance_id()
    for row, queue, code in ((good, "all.q", "0"), (bad, "one.q", "3")):
        [record] = view.records(row.task_id)
        assert record["jobname"] == f"caseflow-{instance}-{row.id}-1"
        assert (record["qname"], record["failed"], record["exit_status"]) == (queue, "0", code)
        assert Path(row.remote_path, ".caseflow", "gridengine-exit").exists()
