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
# The job's processes: those with the job's additional group id (Grid Engine gives every process
# of a job one of its gid_range, $SGE_JOB_SPOOL_DIR/addgrpid; a child keeps it whatever it does
# to its session, environment or name) or its label CASEFLOW_JOB in their environment.
addgrp=
if [ -r "$SGE_JOB_SPOOL_DIR/addgrpid" ]; then read -r addgrp < "$SGE_JOB_SPOOL_DIR/addgrpid"; fi
case $addgrp in *[!0-9]*) addgrp= ;; esac
# USR1 (a soft limit reached: s_rt, s_cpu, ...) and USR2 (a qdel of a job submitted with
# -notify, as caseflow's are) warn the job's processes; the wrapper lives on (a handler, not an
# ignore: the command gets the signals as they are) to end what the command leaves
trap 'warned=1' USR1 USR2
"$@" > .caseflow/gridengine.out 2>&1 < /dev/null
rc=$?
# What the command left running (a child in a session of its own, a daemon) outlives the job's
# process group, which is all Grid Engine ends, and would hold the slot's GPU after the case
# ended: TERM, KILL after 10 s (and every 10 s), and the exit code only once none is left.
# (A process started by a server that ran before the job, such as a tmux a person started, is
# not the job's; one that a server the job started runs is.) Needs /proc.
scan() {
  if [ -n "$addgrp" ]; then
    grep -lE "^Groups:(.*[[:space:]])?$addgrp([[:space:]]|\$)" /proc/[0-9]*/status 2>/dev/null |
      sed -e 's,^/proc/,,' -e 's,/status$,,'
  fi
  grep -lzxF -- "CASEFLOW_JOB=$JOB_NAME" /proc/[0-9]*/environ 2>/dev/null |
    sed -e 's,^/proc/,,' -e 's,/environ$,,'
}
left() {  # in this shell, not a subshell: the scan's own processes have ended by now
  pids=
  for p in $(scan); do
    [ "$p" != "$$" ] || continue
    state=
    { while IFS= read -r line; do
        case $line in State:*) state=${line#State:}; break ;; esac
      done < "/proc/$p/status"; } 2>/dev/null
    case $state in *[ZX]*|'') continue ;; esac
    case " $pids " in *" $p "*) ;; *) pids="$pids $p" ;; esac
  done
}
left
i=0
while [ -n "$pids" ]; do
  if [ "$i" -eq 0 ]; then sig=TERM; elif [ $((i % 100)) -eq 0 ]; then sig=KILL; else sig=; fi
  # shellcheck disable=SC2086  # a list of pids
  [ -z "$sig" ] || kill -s "$sig" $pids 2>/dev/null
  sleep 0.1
  i=$((i + 1))
  left
done
printf '%s %s\n' "$JOB_ID" "$rc" > .caseflow/gridengine-exit.tmp &&
  mv -f .caseflow/gridengine-exit.tmp .caseflow/gridengine-exit
# Grid Engine reads a job script's 99 as "run it again" and 100 as "put it in error state";
# the command's own code is in the exit code file, which caseflow reads
case $rc in 99 | 100) exit 1 ;; esac
exit "$rc"
