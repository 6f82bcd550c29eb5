#!/bin/sh
# The direct runner's stop. $1 = the job's pid (its task id; "-" when unknown: a submit whose
# answer was lost; then .caseflow/pid of the case folder is read), $2 = case folder,
# $3 = marker (the job wrapper's $0), $4 = label (the job's CASEFLOW_JOB), $5 = TERM or KILL.
# Signals the job's whole process group when its wrapper is alive and is this case's (its $0
# is the marker and it works in the case folder: a reused pid is never signalled), and the
# job's processes that left the group (they carry its label); else the job's processes found
# by `ours` (the wrapper was killed alone). Prints
# "none" when no job was launched in the folder, "signalled" or "gone".
pid=$1 d=$2 marker=$3 label=$4 sig=$5
if [ "$pid" = - ]; then
  pid=
  [ -d "$d/.caseflow/launched" ] || { echo none; exit 0; }
  { read -r pid || [ -n "$pid" ]; } < "$d/.caseflow/pid" 2>/dev/null
  # launched, its pid not written yet: the caller asks again (the job is seen running)
  [ -n "$pid" ] || { echo signalled; exit 0; }
fi
case $pid in ''|*[!0-9]*) echo "not a pid: $pid" >&2; exit 2 ;; esac
# TERM once per run: this command may come again after a lost reply, and a second TERM can cut
# the job's handler (a checkpoint) short; the marker is made atomically before the first TERM
if [ "$sig" = TERM ] && [ -d "$d/.caseflow" ] && ! mkdir "$d/.caseflow/stop-term" 2>/dev/null; then
  echo signalled; exit 0
fi
# shellcheck disable=SC3013  # test -ef: dash, bash, busybox and ksh have it (direct-status.sh)
if kill -0 "$pid" 2>/dev/null && [ "/proc/$pid/cwd" -ef "$d" ] &&
    tr '\000' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$marker"; then
  kill -s "$sig" -- "-$pid" 2>/dev/null
  # and what left the group, only: a second TERM to a member could cut its handler short
  ours "$pid" "$label"
  # shellcheck disable=SC2086  # a list of pids
  [ -z "$strays" ] || kill -s "$sig" $strays 2>/dev/null
  echo signalled; exit 0
fi
ours "$pid" "$label"
if [ -n "$ours" ]; then
  # shellcheck disable=SC2086  # a list of pids
  kill -s "$sig" $ours 2>/dev/null
  echo signalled; exit 0
fi
echo gone
