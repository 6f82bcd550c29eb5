#!/bin/sh
# caseflow's batch script: runs its arguments (env NAME=VALUE ... COMMAND) in the case folder
# and records the job's name and id, then its exit code, in .caseflow/.
# A job Slurm requeued starts again here under the same id: the exit code of its earlier
# start (if it wrote one before it was killed) is not this start's.
# It outlives the TERM Slurm sends at a cancel, a preemption or a time limit (the trap: sh runs
# it only once the command has ended), so that the job stays COMPLETING until its command has
# ended or Slurm's KillWait has passed and it was KILLed: without it this script died at once,
# the command it left was no longer tracked (proctrack/linuxproc), Slurm said the job ended and
# gave its GPUs to the next job while the command, writing its checkpoint, ran on (a review).
trap 'signalled=1' TERM
mkdir -p .caseflow && rm -f .caseflow/slurm-exit_code
printf '%s %s\n' "$SLURM_JOB_NAME" "$SLURM_JOB_ID" > .caseflow/slurm-job.tmp &&
  mv -f .caseflow/slurm-job.tmp .caseflow/slurm-job
"$@"
rc=$?
printf '%s %s\n' "$SLURM_JOB_ID" "$rc" > .caseflow/slurm-exit_code.tmp &&
  mv -f .caseflow/slurm-exit_code.tmp .caseflow/slurm-exit_code
exit "$rc"
