"""The `direct` runner: no queue, the job is started detached in its case folder.

It keeps its bookkeeping in `<case folder>/.caseflow/`: `pid` (the job's
session leader), `exit_code` (written when the job ends) and `job.log` (stdout
and stderr). All of it goes through the transport's `run` with argument lists;
the shell scripts below take every variable part as a positional parameter, so
nothing from a case name or path is ever parsed by a shell.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import PermanentError, TransientError
from . import FAILURE, NOT_FOUND, RUNNING, SUCCESS, JobRef, JobSpec, JobStatus, QueueBackend

MARK = "caseflow-job"  # the job wrapper's $0, so a reused pid is not taken for the job

# $1 = case folder, $2 = marker, $3... = the job's argv (env K=V ... command).
LAUNCH = r"""
cd -- "$1" || { echo "case folder $1 is missing" >&2; exit 97; }
marker=$2; shift 2
mkdir -p .caseflow || exit 98
if ! mkdir .caseflow/launched 2>/dev/null; then
  i=0
  while [ ! -s .caseflow/pid ] && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i+1)); done
  if [ -s .caseflow/pid ]; then cat .caseflow/pid; exit 0; fi
  echo "a launch was started here before but left no pid" >&2; exit 99
fi
setsid sh -c 'echo $$ > .caseflow/pid.tmp && mv .caseflow/pid.tmp .caseflow/pid
"$@" > .caseflow/job.log 2>&1 < /dev/null
rc=$?
echo "$rc" > .caseflow/exit_code.tmp && mv .caseflow/exit_code.tmp .caseflow/exit_code' \
  "$marker" "$@" < /dev/null > /dev/null 2>&1 &
i=0
while [ ! -s .caseflow/pid ] && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i+1)); done
if [ -s .caseflow/pid ]; then cat .caseflow/pid; exit 0; fi
echo "the job did not start within 10 s" >&2; exit 99
"""

# one line per folder argument: "<n> exit <code>" | "<n> running" | "<n> gone"
STATUS = r"""
n=0
alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/cmdline" ] || return 0
  tr '\000' ' ' < "/proc/$1/cmdline" | grep -q "caseflow-job"
}
for d in "$@"; do
  b=$d/.caseflow
  if [ -s "$b/exit_code" ]; then echo "$n exit $(cat "$b/exit_code")"
  elif [ -d "$b/launched" ] && [ ! -s "$b/pid" ]; then echo "$n running"
  elif alive "$(cat "$b/pid" 2>/dev/null)"; then echo "$n running"
  elif [ -s "$b/exit_code" ]; then echo "$n exit $(cat "$b/exit_code")"
  else echo "$n gone"
  fi
  n=$((n+1))
done
"""

# $1 = pid: stop the job's whole session, if it is still our job
CANCEL = r"""
pid=$1
kill -0 "$pid" 2>/dev/null || exit 0
if [ -r "/proc/$pid/cmdline" ]; then
  tr '\000' ' ' < "/proc/$pid/cmdline" | grep -q "caseflow-job" || exit 0
fi
kill -s TERM -- "-$pid" 2>/dev/null || kill -s TERM "$pid" 2>/dev/null
exit 0
"""


def job_argv(job: JobSpec) -> list[str]:
    env = [f"{k}={v}" for k, v in sorted(job.env.items())]
    command = ["sh", "-c", job.command] if isinstance(job.command, str) else list(job.command)
    return ["env", *env, *command]


class DirectBackend(QueueBackend):
    def __init__(self, transport):
        self.transport = transport

    def submit(self, job: JobSpec) -> str:
        res = self.transport.run(["sh", "-c", LAUNCH, "caseflow-launch", job.remote_path,
                                  f"{MARK}-{job.case_id}", *job_argv(job)])
        pid = res.stdout.strip()
        if res.returncode == 97:
            raise PermanentError(f"the uploaded case folder is missing on {self.transport.name}")
        if res.returncode != 0 or not pid.isdigit():
            raise TransientError(f"starting the job failed (exit {res.returncode}): "
                                 f"{res.stderr.strip() or res.stdout.strip()}")
        return pid

    def status(self, jobs: Sequence[JobRef]) -> dict[int, JobStatus]:
        if not jobs:
            return {}
        res = self.transport.run(["sh", "-c", STATUS, "caseflow-status",
                                  *[j.remote_path for j in jobs]])
        if res.returncode != 0:
            raise TransientError(f"job status query failed (exit {res.returncode}): "
                                 f"{res.stderr.strip()}")
        out: dict[int, JobStatus] = {}
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) < 2 or not parts[0].isdigit() or int(parts[0]) >= len(jobs):
                continue
            job = jobs[int(parts[0])]
            if parts[1] == "running":
                out[job.case_id] = JobStatus(RUNNING, "running")
            elif parts[1] == "exit" and len(parts) == 3 and parts[2].lstrip("-").isdigit():
                code = int(parts[2])
                out[job.case_id] = (JobStatus(SUCCESS, "exit code 0", 0) if code == 0 else
                                    JobStatus(FAILURE, f"job exited with code {code}", code))
            else:
                out[job.case_id] = JobStatus(NOT_FOUND, "the job's process is gone and left "
                                                        "no exit code")
        missing = [j.case_id for j in jobs if j.case_id not in out]
        if missing:
            raise TransientError(f"job status query answered for {len(out)} of {len(jobs)} jobs")
        return out

    def job_log(self, job: JobRef) -> str | None:
        res = self.transport.run(["tail", "-c", "1000000", "--",
                                  f"{job.remote_path}/.caseflow/job.log"])
        return res.stdout if res.returncode == 0 else None

    def cancel(self, job: JobRef) -> None:
        if not job.task_id.isdigit():
            return
        res = self.transport.run(["sh", "-c", CANCEL, "caseflow-cancel", job.task_id])
        if res.returncode != 0:
            raise TransientError(f"cancelling job {job.task_id} failed: {res.stderr.strip()}")
