#!/bin/sh
# caseflow's job script for Grid Engine, run in the case folder (qsub -wd). Its arguments are
# the job's command line (env NAME=VALUE ... COMMAND), each with its backslashes and newlines
# written as \0134 and \0012: Grid Engine cuts an argument at a newline. It records the job's
# name and id, then its exit code, in .caseflow/, and the command's output in
# .caseflow/gridengine.out.
for a in "$@"; do
  shift
  v=$(printf '%bx' "$a")
  set -- "$@" "${v%x}"
done
mkdir -p .caseflow
printf '%s %s\n' "$JOB_NAME" "$JOB_ID" > .caseflow/gridengine-job.tmp &&
  mv -f .caseflow/gridengine-job.tmp .caseflow/gridengine-job
"$@" > .caseflow/gridengine.out 2>&1 < /dev/null
rc=$?
printf '%s %s\n' "$JOB_ID" "$rc" > .caseflow/gridengine-exit.tmp &&
  mv -f .caseflow/gridengine-exit.tmp .caseflow/gridengine-exit
exit "$rc"
