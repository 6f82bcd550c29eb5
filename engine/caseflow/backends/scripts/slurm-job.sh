#!/bin/sh
# caseflow's batch script: runs its arguments (env NAME=VALUE ... COMMAND) in the case folder
# and records the job's name and id, then its exit code, in .caseflow/.
mkdir -p .caseflow
printf '%s %s\n' "$SLURM_JOB_NAME" "$SLURM_JOB_ID" > .caseflow/slurm-job.tmp &&
  mv -f .caseflow/slurm-job.tmp .caseflow/slurm-job
"$@"
rc=$?
printf '%s %s\n' "$SLURM_JOB_ID" "$rc" > .caseflow/slurm-exit_code.tmp &&
  mv -f .caseflow/slurm-exit_code.tmp .caseflow/slurm-exit_code
exit "$rc"
