#!/bin/sh
# The direct runner's submit. $1 = case folder, $2 = marker (the job wrapper's $0, so that a
# reused pid is not taken for the job), $3 = label (the job's CASEFLOW_JOB), $4 = the host's
# boot id file (its first line is copied to .caseflow/boot_id: the status script tells a host
# rebooted under the job by it), $5... = the job's argv (env K=V ... command).
# Starts the job detached in its own session and prints its pid; a second launch in the same
# folder prints the first one's pid instead of starting another job. The job's first command
# writes its pid in one write: a reader sees no file, an empty one (not written yet: the
# status script takes a launched job without a pid for running) or the whole pid.
cd -- "$1" || { echo "case folder $1 is missing" >&2; exit 97; }
marker=$2; label=$3; boot_file=$4; shift 4
[ -d .caseflow ] || mkdir .caseflow || exit 98
# The pid is waited for in steps of 2 ms, not 50 ms: a submit of a tiny case took 113 ms, most
# of it this wait (the job's pid is written by its first command, a few ms after the start).
pid=
wait_pid() {
  i=0
  while [ ! -s .caseflow/pid ] && [ "$i" -lt 300 ]; do
    if [ "$i" -lt 100 ]; then sleep 0.002; else sleep 0.05; fi
    i=$((i+1))
  done
  [ -s .caseflow/pid ] && { read -r pid || [ -n "$pid" ]; } < .caseflow/pid
}
if ! mkdir .caseflow/launched 2>/dev/null; then
  if wait_pid; then echo "$pid"; exit 0; fi
  echo "a launch was started here before but left no pid" >&2; exit 99
fi
boot=
{ read -r boot || [ -n "$boot" ]; } < "$boot_file" 2>/dev/null
[ -z "$boot" ] || printf '%s\n' "$boot" > .caseflow/boot_id
# The job wrapper (its $0 the marker, the leader of the job's session and process group):
# - it outlives a TERM sent to the group (the trap), so that the job is seen running until
#   it has ended: a job that writes a checkpoint on TERM keeps its GPU slot meanwhile;
# - once its command has ended, the processes it left (in its group, or anywhere with its
#   label CASEFLOW_JOB in their environment: a child may leave the group) are sent TERM (unless
#   a stop sent it already), then KILL every 0.2 s after 10 s until they are gone, before the exit code is written: the slot
#   is free only when nothing of the job runs on its GPU (as Slurm ends a job's whole cgroup).
# - it notes when the job started and when it ended (.caseflow/started, .caseflow/ended: Unix
#   time, `date +%s.%N`; the status script gives them with the exit code: the job's real times,
#   not when a poll happened to see them).
#   /proc/PID/stat is read whole: a command name may hold a newline.
# shellcheck disable=SC2016  # the job wrapper's script: expanded by its own shell
setsid sh -c 'echo $$ > .caseflow/pid
date +%s.%N > .caseflow/started
label=$1; shift
trap "stopping=1" TERM
"$@" > .caseflow/job.log 2>&1 < /dev/null
rc=$?
others() {
  o=
  [ -d /proc/self ] || return 0
  labelled=" $(grep -lzxF -- "CASEFLOW_JOB=$label" /proc/[0-9]*/environ 2>/dev/null | tr "\n" " ")"
  for f in /proc/[0-9]*/stat; do
    l=
    { while IFS= read -r x || [ -n "$x" ]; do l="$l $x"; done < "$f"; } 2>/dev/null
    [ -n "$l" ] || continue
    l=${l##*) }
    p=${f#/proc/}; p=${p%/stat}
    [ "$p" != "$$" ] || continue
    set -- $l
    [ "$1" != Z ] || continue
    case $labelled in *" /proc/$p/environ "*) o="$o $p"; continue ;; esac
    if [ "$3" = "$$" ]; then o="$o $p"; fi
  done
  return 0
}
others
if [ -n "$o" ]; then
  # a stop sent TERM to the group (and to the processes that left it) already: once only
  [ "${stopping:-0}" = 1 ] || kill -s TERM $o 2>/dev/null
  i=0
  while others && [ -n "$o" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  while others && [ -n "$o" ]; do kill -s KILL $o 2>/dev/null; sleep 0.2; done
fi
date +%s.%N > .caseflow/ended
echo "$rc" > .caseflow/exit_code.tmp && mv .caseflow/exit_code.tmp .caseflow/exit_code' \
  "$marker" "$label" "$@" < /dev/null > /dev/null 2>&1 &
if wait_pid; then echo "$pid"; exit 0; fi
echo "the job did not start within 10 s" >&2; exit 99
