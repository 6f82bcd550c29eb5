#!/bin/sh
# caseflow's wrapper of a pueue task: runs its arguments after the label and records
# the task's process group, then the exit code, in .caseflow/ (so that caseflow knows when
# the job really ended even if the pueue daemon lost track of it). Uses ours (job-group.sh).
# The job's stdout and stderr go to .caseflow/job.log, byte for byte: caseflow brings that file
# home with the results. pueue's own log is not used for them: `pueue log` of a task whose
# output is not UTF-8 (3.4.1 and 4.0.4) prints an error in place of the whole log. pueue's log
# of the task says where the output is. No trap: a TERM (caseflow's cancel) ends this wrapper
# at once, as it ends a job that does not catch it.
# The start record is "LABEL PGID DAEMON CASEFLOW_JOB": DAEMON is the pueued that started the
# task (this shell's parent), as its pid and start time, "PID:START" (START empty when ps cannot
# say): a job whose processes are gone without an exit record while that daemon no longer runs
# was lost to the infrastructure (pueued restarted, the host rebooted), not ended by `pueue
# kill`. CASEFLOW_JOB says that the job's processes carry CASEFLOW_JOB=LABEL in their
# environment (pueue gives it to the task, and it is exported here again): the poll follows
# them by it wherever they go (a child may leave the group: setsid), and a group id reused by
# another program after a reboot is not taken for the job. A record without it (an older
# wrapper) is followed by its process group.
label=$1; shift
CASEFLOW_JOB=$label; export CASEFLOW_JOB
daemon=$PPID:$(LC_ALL=C TZ=UTC0 ps -o lstart= -p "$PPID" 2>/dev/null | tr -d ' ')
printf '%s %s %s CASEFLOW_JOB\n' "$label" "$$" "$daemon" > .caseflow/pueue-job.tmp &&
  mv -f .caseflow/pueue-job.tmp .caseflow/pueue-job
if { : > .caseflow/job.log; } 2>/dev/null; then
  printf 'caseflow: the output of this job is in %s/.caseflow/job.log\n' "$PWD"
  "$@" >> .caseflow/job.log 2>&1
else
  printf 'caseflow: cannot write .caseflow/job.log; the output of this job follows\n'
  "$@"
fi
rc=$?
# Once the command has ended, the processes it left (in the group, or anywhere with its label)
# get TERM, then KILL every 0.2 s after 10 s, until they are gone, before the exit code is
# written: the case ends and its GPU slot is free only when nothing of the job runs on the GPU
# (as the direct runner does, and Slurm with a job's cgroup).
left() {  # the job's live processes but this wrapper, into $left; false when none
  ours "$$" "$label"
  left=''
  # shellcheck disable=SC2154  # $ours: set by ours
  for p in $ours; do [ "$p" = "$$" ] || left="$left $p"; done
  [ -n "$left" ]
}
if left; then
  # shellcheck disable=SC2086  # a list of pids
  kill -s TERM $left 2>/dev/null
  i=0
  while left && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  # shellcheck disable=SC2086  # a list of pids
  while left; do kill -s KILL $left 2>/dev/null; sleep 0.2; done
fi
printf '%s %s\n' "$label" "$rc" > .caseflow/pueue-exit.tmp &&
  mv -f .caseflow/pueue-exit.tmp .caseflow/pueue-exit
exit "$rc"
