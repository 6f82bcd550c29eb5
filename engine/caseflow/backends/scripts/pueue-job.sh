#!/bin/sh
# caseflow's wrapper of a pueue task: runs its arguments after the label and records
# the task's process group, then the exit code, in .caseflow/ (so that caseflow knows when
# the job really ended even if the pueue daemon lost track of it)
label=$1; shift
printf '%s %s\n' "$label" "$$" > .caseflow/pueue-job.tmp &&
  mv -f .caseflow/pueue-job.tmp .caseflow/pueue-job
"$@"
rc=$?
printf '%s %s\n' "$label" "$rc" > .caseflow/pueue-exit.tmp &&
  mv -f .caseflow/pueue-exit.tmp .caseflow/pueue-exit
exit "$rc"
