"""Writes this folder's files: real answers of Grid Engine 8.1.9 (Debian 12's packages), from a
cluster of tests/gridengine_cluster.py started for the purpose, as root:

    .venv/bin/python tests/data/gridengine/capture.py

tests/test_gridengine_status.py reads them (the parsers on canned text); tests/gridengine/
checks the same parsers against the running queue.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/

from caseflow.backends.gridengine import POLL  # noqa: E402
from gridengine_cluster import GridEngineCluster  # noqa: E402
from harness import wait_for  # noqa: E402


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="gridengine-capture-"))
    with GridEngineCluster(root, queues={"all.q": 4, "epi.q": 1},
                           parallel_environments=("smp",)) as cluster:
        capture(cluster, root)
    print(f"written to {HERE}")


def capture(cluster: GridEngineCluster, root: Path) -> None:
    def run(*argv: str, check: bool = False) -> str:
        res = cluster.run(list(argv), check=check)
        return res.stdout + (f"--stderr--\n{res.stderr}" if res.stderr else "") + \
            (f"--exit {res.returncode}\n" if res.returncode else "")

    def save(name: str, text: str) -> None:
        (HERE / name).write_text(text)

    def qsub(*args: str) -> str:
        return cluster.run(["qsub", "-terse", "-o", "/dev/null", "-j", "y", "-wd", str(jobs),
                            *args], check=True).stdout.strip()

    def state(jid: str) -> str:
        out = cluster.run(["qstat", "-xml"], check=True).stdout
        at = out.find(f"<JB_job_number>{jid}</JB_job_number>")
        return "" if at < 0 else out[out.find("<state>", at) + 7:out.find("</state>", at)]

    save("qacct-no-accounting-file.txt", run("qacct", "-j", "1"))
    # a queue whose epilog fails: the job's record says failed 15 with exit status 0
    conf = cluster.run(["qconf", "-sq", "epi.q"], check=True).stdout
    (root / "epi.q").write_text("\n".join(
        "epilog /bin/false" if ln.startswith("epilog ") else ln for ln in conf.splitlines()))
    cluster.run(["qconf", "-Mq", str(root / "epi.q")], check=True)
    jobs = root / "jobs"
    jobs.mkdir()
    jobs.chmod(0o755)
    script = jobs / "job.sh"
    script.write_text('#!/bin/sh\nsleep "${1:-0}"\nexit "${2:-0}"\n')

    three = qsub("-N", "exits-three", "-q", "all.q", str(script), "0", "3")
    epilog = qsub("-N", "epilog-fails", "-q", "epi.q", str(script), "0", "0")
    wait_for(lambda: cluster.run(["qacct", "-j", epilog]).returncode == 0, 60,
             what="the epilog's record")
    cluster.run(["qmod", "-dq", "epi.q"])  # its job went back to the queue: it stays there
    running = qsub("-N", "runs", "-q", "all.q", str(script), "300")
    parallel = qsub("-N", "runs-on-two-slots", "-q", "all.q", "-pe", "smp", "2", str(script),
                    "300")
    odd = qsub("-N", "odd&<name>'\"", "-q", "all.q", "-h", str(script), "0")
    held = qsub("-N", "held", "-h", "-q", "all.q", str(script), "0")
    waiting = qsub("-N", "waits", "-q", "all.q", "-pe", "smp", "4", str(script), "0")
    broken = qsub("-N", "no-such-folder", "-q", "all.q", "-wd", "/nonexistent/folder",
                  str(script), "0")
    wait_for(lambda: state(running) == "r" and state(parallel) == "r" and
             state(broken) == "Eqw", 60, what="the jobs to run, one to fail to start")
    save("qstat-states.xml", run("qstat", "-xml"))
    save("qstat-j-eqw.txt", run("qstat", "-j", broken))
    save("qstat-j-not-found.txt", run("qstat", "-j", "caseflow-nothing-1-1"))
    save("qacct-while-eqw.txt", run("qacct", "-j", broken))
    # the poll script itself, as the backend runs it: listed, error state, ended, unknown
    folders = []
    for jid in (running, broken, three, "99999"):
        folder = jobs / f"case {jid}"
        (folder / ".caseflow").mkdir(parents=True)
        folders += [jid, str(folder)]
    (jobs / f"case {three}" / ".caseflow" / "gridengine-exit").write_text(f"{three} 3\n")
    save("poll.txt", run("sh", "-c", POLL, "caseflow-qstat", *folders))

    cluster.run(["qdel", running], check=True)
    save("qstat-deleting.xml", run("qstat", "-xml"))
    wait_for(lambda: cluster.run(["qacct", "-j", running]).returncode == 0, 60,
             what="the deleted job's record")
    cluster.run(["qdel", broken, waiting, held, odd, parallel, epilog], check=True)
    wait_for(lambda: cluster.run(["qacct", "-j", broken]).returncode == 0, 60,
             what="the failed job's record")
    time.sleep(1)  # nothing to wait for: a deleted pending job never gets a record
    for name, jid in (("exit-three", three), ("epilog-failed", epilog),
                      ("qdel-running", running), ("eqw-deleted", broken),
                      ("pending-deleted", waiting)):
        save(f"qacct-{name}.txt", run("qacct", "-j", jid))
    wait_for(lambda: "<job_list" not in run("qstat", "-xml"), 60, what="an empty queue")
    save("qstat-empty.xml", run("qstat", "-xml"))
    cluster.kill_qmaster()
    save("qstat-qmaster-down.txt", run("qstat", "-xml"))


if __name__ == "__main__":
    main()
