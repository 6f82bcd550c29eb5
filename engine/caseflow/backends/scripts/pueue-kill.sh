#!/bin/sh
# signal_job FOLDER LABEL SIGNAL...: send the SIGNALs, one after the other, to the job's whole
# process group, read from the wrapper's start record (FOLDER/.caseflow/pueue-job) when the
# record is this label's and a process of the group is alive; prints "@@caseflow group PGID
# SIGNAL..." when it did. For the processes pueue cannot stop: those of a task it lost track of
# (a daemon restart) or marked ended while they live on (its leader ended on a TERM).
signal_job() {
  [ -r "$1/.caseflow/pueue-job" ] && read -r l g _ < "$1/.caseflow/pueue-job" || return 0
  [ "$l" = "$2" ] || return 0
  case $g in ''|*[!0-9]*) return 0 ;; esac
  kill -0 -"$g" 2>/dev/null || return 0
  shift 2
  for s in "$@"; do kill -s "$s" -- "-$g" 2>/dev/null; done
  echo "@@caseflow group $g $*"
}
