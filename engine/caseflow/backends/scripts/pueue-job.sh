#!/bin/sh
# caseflow's wrapper of a pueue task: runs its arguments after the label and records
# the task's process group, then the exit code, in .caseflow/ (so that caseflow knows when
# the job really ended even if the pueue daemon lost track of it).
# The job's stdout and stderr go to .caseflow/job.log, byte for byte: caseflow brings that file
# home with the results. pueue's own log is not used for them: `pueue log` of a task whose
# output is not UTF-8 (3.4.1 and 4.0.4) prints an error in place of the whole log. pueue's log
# of the task says where the output is. No trap: a TERM (caseflow's cancel) ends this wrapper
# at once, as it ends a job that does not catch it.
# The start record is "LABEL PGID DAEMON": DAEMON is the pueued that started the task (this
# shell's parent), as its pid and start time, "PID:START" (START empty when ps cannot say): a
# job whose processes are gone without an exit record while that daemon no longer runs was lost
# to the infrastructure (pueued restarted, the host rebooted), not ended by `pueue kill`.
label=$1; shift
daemon=$PPID:$(LC_ALL=C TZ=UTC0 ps -o lstart= -p "$PPID" 2>/dev/null | tr -d ' ')
printf '%s %s %s\n' "$label" "$$" "$daemon" > .caseflow/pueue-job.tmp &&
  mv -f .caseflow/pueue-job.tmp .caseflow/pueue-job
if { : > .caseflow/job.log; } 2>/dev/null; then
  printf 'caseflow: the output of this job is in %s/.caseflow/job.log\n' "$PWD"
  "$@" >> .caseflow/job.log 2>&1
else
  printf 'caseflow: cannot write .caseflow/job.log; the output of this job follows\n'
  "$@"
fi
rc=$?
printf '%s %s\n' "$label" "$rc" > .caseflow/pueue-exit.tmp &&
  mv -f .caseflow/pueue-exit.tmp .caseflow/pueue-exit
exit "$rc"
