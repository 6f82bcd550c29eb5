#!/bin/sh
# signal_job FOLDER LABEL SIGNAL...: send the SIGNALs, one after the other, to the job's
# processes, read from the wrapper's start record (FOLDER/.caseflow/pueue-job) when the record
# is this label's; prints "@@caseflow group PGID SIGNAL..." when it did. For the processes
# pueue cannot stop: those of a task it lost track of (a daemon restart) or marked ended while
# they live on (its leader ended on a TERM), and those that left the task's group (setsid).
# A job whose processes carry its label (the record says CASEFLOW_JOB, pueue-job.sh): its group
# while a process of it is the job's (`ours`, job-group.sh: a group id reused by another program
# after a reboot is left alone), and its labelled processes outside the group. An older
# wrapper's job, or without /proc: its whole group while a process of it is alive.
# signal_strays FOLDER LABEL SIGNAL...: the same to the job's processes outside its group only
# (pueue signalled the group).
job_record() {  # FOLDER LABEL: the record's group into $g, its kind into $k; false if none
  [ -r "$1/.caseflow/pueue-job" ] && read -r l g _ k < "$1/.caseflow/pueue-job" || return 1
  [ "$l" = "$2" ] || return 1
  case $g in ''|*[!0-9]*) return 1 ;; esac
}
signal_job() {
  job_record "$1" "$2" || return 0
  if [ "$k" = CASEFLOW_JOB ] && [ -d /proc/self ]; then
    ours "$g" "$2"
    [ -n "$ours" ] || return 0
  else
    kill -0 -"$g" 2>/dev/null || return 0
    ours='' strays=''
  fi
  shift 2
  for s in "$@"; do
    # the group, unless none of the job's processes is in it (ours holds only strays)
    if [ -z "$ours" ] || [ "$ours" != "$strays" ]; then kill -s "$s" -- "-$g" 2>/dev/null; fi
    # shellcheck disable=SC2086  # a list of pids
    [ -z "$strays" ] || kill -s "$s" $strays 2>/dev/null
  done
  echo "@@caseflow group $g $*"
}
signal_strays() {
  job_record "$1" "$2" && [ "$k" = CASEFLOW_JOB ] && [ -d /proc/self ] || return 0
  ours "$g" "$2"
  [ -n "$strays" ] || return 0
  shift 2
  # shellcheck disable=SC2086  # a list of pids
  for s in "$@"; do kill -s "$s" $strays 2>/dev/null; done
  echo "@@caseflow strays$strays $*"
}
