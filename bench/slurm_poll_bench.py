"""Slurm at scale: the bytes one poll of caseflow's jobs transfers, with thousands of foreign jobs.

A one-node Slurm cluster (tests/slurm_cluster.py, in its own network namespace) gets --own
caseflow jobs (submitted by the Slurm backend: a few running, the rest pending) and then
--foreign jobs of someone else (held, so they stay queued). Every byte between caseflow and the
cluster's sshd passes the cluster's bridge relay, which counts them; a poll's bytes are the
relay's count across one `SlurmBackend.status` call for all own jobs, on a connection already
open (median of --polls). The alternative, measured in the same run through the same transport:
`squeue --json`, which lists every job of the cluster (Slurm 22.05 ignores its filters) and was
what caseflow's poll read before.

    python bench/slurm_poll_bench.py [--own 20] [--foreign 5000] [--polls 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, median, ratio, section, workdir  # noqa: E402

from caseflow.backends import RUNNING, JobRef, JobSpec  # noqa: E402
from caseflow.backends.slurm import SlurmBackend  # noqa: E402
from caseflow.backends.slurm_options import SlurmOptions  # noqa: E402
from caseflow.config import BackendConfig, TransportConfig  # noqa: E402
from caseflow.transports.ssh import SSHTransport  # noqa: E402
from slurm_cluster import SlurmCluster  # noqa: E402

# held jobs of another name, submitted by four loops at once inside the namespace
FOREIGN = ('i=$1; while [ "$i" -lt "$2" ]; do sbatch --hold -J "foreign-$i" -o /dev/null '
           '--chdir=/tmp --wrap true >/dev/null || exit 1; i=$((i + 4)); done')


def _bytes(relay, fn) -> tuple[int, object]:
    before = relay.to_client + relay.to_server
    value = fn()
    return relay.to_client + relay.to_server - before, value


def _measure(cluster, transport, backend, refs, polls: int) -> dict:
    poll, whole = [], []
    for _ in range(polls):
        n, answers = _bytes(cluster.bridge, lambda: backend.status(refs))
        if {a.outcome for a in answers.values()} != {RUNNING}:
            raise SystemExit(f"slurm poll bench: the jobs did not all stay queued: {answers}")
        poll.append(n)
        n, res = _bytes(cluster.bridge, lambda: transport.run(["squeue", "--json"]))
        if res.returncode != 0:
            raise SystemExit(f"squeue --json failed: {res.stderr}")
        whole.append(n)
    t0 = time.perf_counter()
    backend.status(refs)
    return {"poll_bytes": int(median(poll)), "squeue_json_bytes": int(median(whole)),
            "poll_wall_s": round(time.perf_counter() - t0, 3)}


def _queued(cluster) -> int:
    res = cluster.run(["squeue", "-h", "-t", "all", "-o", "%i"], check=True)
    return len(res.stdout.split())


def run(own: int = 20, foreign: int = 5000, polls: int = 5) -> dict:
    section(f"slurm poll: {own} caseflow jobs, then {foreign} foreign jobs in the queue")
    with workdir("slurm") as work:
        cluster = SlurmCluster(work / "cluster", min_job_age=300, gpus=2, cpus=4,
                               slurm_conf=("MaxJobCount=20000",))
        cluster.start()
        try:
            remote = work / "remote"
            transport = SSHTransport(TransportConfig(**cluster.transport_settings(remote)))
            options = SlurmOptions(gpus_per_job=0)
            backend = SlurmBackend(transport, BackendConfig(kind="slurm", command="true",
                                                            slurm=options))
            refs = []
            for i in range(own):
                folder = remote / f"{i + 1}-case{i}"
                (folder / ".caseflow").mkdir(parents=True)
                spec = JobSpec(i + 1, f"caseflow-bench-{i + 1}-1", str(folder), "gpu_a",
                               "sleep 3600")
                refs.append(JobRef(spec.case_id, backend.submit(spec), spec.label,
                                   spec.remote_path))
            alone = _measure(cluster, transport, backend, refs, polls)
            t0 = time.perf_counter()
            loops = [subprocess.Popen([*cluster.nsenter(), "sh", "-c", FOREIGN, "x", str(k),
                                       str(foreign)], env=cluster.env) for k in range(4)]
            if any([p.wait() for p in loops]):
                raise SystemExit("submitting the foreign jobs failed")
            submit_s = time.perf_counter() - t0
            queued = _queued(cluster)
            crowded = _measure(cluster, transport, backend, refs, polls)
            transport.close()
        finally:
            cluster.stop()
    result = {
        "own_jobs": own, "foreign_jobs": foreign, "jobs_in_queue": queued,
        "foreign_submit_s": round(submit_s, 1), "polls_measured": polls,
        "alone": alone, "crowded": crowded,
        "poll_growth": ratio(crowded["poll_bytes"], alone["poll_bytes"]),
        "squeue_json_vs_poll_crowded": ratio(crowded["squeue_json_bytes"],
                                             crowded["poll_bytes"]),
    }
    for name, m in (("alone", alone), (f"with {foreign} foreign jobs", crowded)):
        print(f"  {name:28s} caseflow poll {m['poll_bytes']:>10,} bytes ({m['poll_wall_s']} s)"
              f"   squeue --json {m['squeue_json_bytes']:>12,} bytes")
    print(f"  {queued} jobs in the queue; the poll grew {result['poll_growth']}x with the foreign "
          f"jobs; squeue --json is {result['squeue_json_vs_poll_crowded']}x the poll")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--own", type=int, default=20)
    p.add_argument("--foreign", type=int, default=5000)
    p.add_argument("--polls", type=int, default=5)
    p.add_argument("--json")
    args = p.parse_args()
    result = {"machine": machine(), "slurm_poll": run(args.own, args.foreign, args.polls)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
