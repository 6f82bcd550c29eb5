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
# What the command left running carries its CASEFLOW_JOB (its environment, inherited): a child
# in a session of its own (setsid, a daemon) outlives the job's process group, which is all
# Grid Engine ends, and would hold the slot's GPU after the case ended. TERM, KILL after 10 s
# (and every 10 s), and the exit code only once none is left. Needs /proc.
left() {
  grep -lzxF -- "CASEFLOW_JOB=$JOB_NAME" /proc/[0-9]*/environ 2>/dev/null |
    sed -e 's,^/proc/,,' -e 's,/environ$,,' | tr '\n' ' '
}
pids=$(left) i=0
while [ -n "$pids" ]; do
  if [ "$i" -eq 0 ]; then sig=TERM; elif [ $((i % 100)) -eq 0 ]; then sig=KILL; else sig=; fi
  # shellcheck disable=SC2086  # a list of pids
  [ -z "$sig" ] || kill -s "$sig" $pids 2>/dev/null
  sleep 0.1
  i=$((i + 1))
  pids=$(left)
done
printf '%s %s\n' "$JOB_ID" "$rc" > .caseflow/gridengine-exit.tmp &&
  mv -f .caseflow/gridengine-exit.tmp .caseflow/gridengine-exit
# Grid Engine reads a job script's 99 as "run it again" and 100 as "put it in error state";
# the command's own code is in the exit code file, which caseflow reads
case $rc in 99 | 100) exit 1 ;; esac
exit "$rc"
