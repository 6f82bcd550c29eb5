#!/bin/sh
# Shell functions of the direct runner's scripts (put before them by caseflow.transports.shell).
# ours PGID LABEL: sets $ours to the pids of the live processes of process group PGID whose
# environment holds CASEFLOW_JOB=LABEL: the job's processes after its wrapper (the group's
# leader) is gone, e.g. killed alone. A group id is not reused while the group has a member,
# but once it is empty a new group may get the number: the label tells ours from a stranger's.
# Needs /proc; without it $ours stays empty. Zombies do not count (they hold no GPU).
ours() {
  ours=
  [ -d /proc/self ] || return 0
  kill -s 0 -- "-$1" 2>/dev/null || return 0
  for f in /proc/[0-9]*/stat; do
    { read -r l < "$f"; } 2>/dev/null || continue
    l=${l##*) }
    # shellcheck disable=SC2086  # the fields of /proc/PID/stat after the command name
    set -- "$1" "$2" $l
    if [ "$5" != "$1" ] || [ "$3" = Z ]; then continue; fi
    p=${f#/proc/}; p=${p%/stat}
    tr '\000' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qxF -- "CASEFLOW_JOB=$2" &&
      ours="$ours $p"
  done
  return 0
}
