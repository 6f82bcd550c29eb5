"""Writes this folder's files: real answers of Slurm 22.05 (Debian 12's packages), from a
cluster of tests/slurm_cluster.py started for the purpose, as root:

    .venv/bin/python tests/data/slurm/capture.py

poll-times.txt: the backend's poll script (scripts/slurm-poll.sh) as the backend runs it, for a
job squeue no longer lists (sacct's line), one it lists as ended, one running and one waiting
for GPUs; jobs.json: which job is which, the moments around each, and what squeue and sacct say
of them in their own time format. tests/test_durations.py reads them (the parsers on canned
text); tests/test_backend_contract.py checks the same parsers against the running cluster.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/

from caseflow.backends.slurm import POLL  # noqa: E402
from harness import wait_for  # noqa: E402
from slurm_cluster import SlurmCluster  # noqa: E402


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="slurm-capture-"))
    cluster = SlurmCluster(root / "cluster", min_job_age=2, gpus=2, cpus=4)
    cluster.start()
    try:
        capture(cluster, root / "jobs")
    finally:
        cluster.stop()
    print(f"written to {HERE}")


def capture(cluster: SlurmCluster, jobs: Path) -> None:
    jobs.mkdir()
    jobs.chmod(0o777)

    def sbatch(name: str, *args: str) -> str:
        folder = jobs / name
        (folder / ".caseflow").mkdir(parents=True)
        res = cluster.run(["sbatch", "--parsable", f"--job-name={name}", f"--chdir={folder}",
                           "--output=/dev/null", *args], check=True)
        return res.stdout.strip().split(";")[0]

    def state(jid: str) -> str:
        return cluster.run(["squeue", "-h", "-t", "all", "-j", jid, "-o", "%T"]).stdout.strip()

    marks = {"before": time.time()}
    forgotten = sbatch("forgotten", "--wrap", "sleep 1")
    wait_for(lambda: state(forgotten) == "", 60, interval=0.2, what="squeue to forget a job")
    ended = sbatch("ended", "--wrap", "sleep 1")
    wait_for(lambda: state(ended) == "COMPLETED", 60, interval=0.1, what="a job to complete")
    running = sbatch("running", "--gres=gpu:2", "--wrap", "sleep 300")
    waiting = sbatch("waiting", "--gres=gpu:2", "--wrap", "sleep 1")
    wait_for(lambda: state(running) == "RUNNING" and state(waiting) == "PENDING", 60,
             interval=0.1, what="one job running, one waiting for the GPUs")
    ids = {"forgotten": forgotten, "ended": ended, "running": running, "waiting": waiting}
    args = [a for name, jid in ids.items() for a in (jid, str(jobs / name))]
    res = cluster.run(["sh", "-c", POLL, "caseflow-poll", *args], check=True)
    marks["after"] = time.time()
    (HERE / "poll-times.txt").write_text(res.stdout)
    own = cluster.run(["sacct", "-c", "-X", "-P", "-n", "-j", ",".join(ids.values()), "-o",
                       "JobID,Start,End"]).stdout
    (HERE / "jobs.json").write_text(json.dumps(
        {"ids": ids, "moments": marks, "sacct_local_times": own.splitlines()}, indent=2) + "\n")
    cluster.run(["scancel", running, waiting])


if __name__ == "__main__":
    main()
