#!/bin/sh
# The pueue backend's cancel, one command: the check and the action together.
# $1 = pueue client (run by pq, pueue-client.sh), $2 = label, $3 = case folder, $4 = term (stop:
# SIGTERM) or kill (SIGKILL to the job's whole process group). Uses pq, signal_job and
# signal_strays (pueue-kill.sh, with ours of job-group.sh).
# The task is found by its label, never by a stored id: pueue reuses ids after clean, remove
# and reset, and this command may be sent again after a lost reply (the transport repeats it),
# by when the id may be another case's task. pueue picks the label's tasks (`status --json
# label=LABEL`, the query's exact match) and the script acts on their ids at once:
#   Queued, Stashed, Locked: `pueue remove ID`;
#   Running, Paused: term: `pueue kill -s sigterm ID` (a plain `pueue kill` is SIGKILL to the
#     task's process group in 3.4.1 and 4.0.4), then -s sigcont for a paused one (its processes
#     are stopped: they get the TERM once they go on); kill: `pueue kill ID`;
#   Done: nothing for pueue to stop.
# An action pueue refuses (the task changed state meanwhile) is tried again on a fresh look.
# Then the job's process group, from the wrapper's record of this label, while any of it is
# alive: kill: SIGKILL (also after pueue's kill: its stragglers); term: TERM and CONT when pueue
# did not signal it (the task is Done, or unknown to pueue: its daemon lost it), else TERM and
# CONT to the job's processes that left its group (they carry its label).
# Prints "@@caseflow removed ID", "@@caseflow signalled ID SIGNAL", "@@caseflow group PGID
# SIGNALS", "@@caseflow strays PID... SIGNALS" for what it did, then "@@caseflow end". pueued
# not answering: the group is still signalled, then pueue's answer and exit code.
# shellcheck disable=SC2034  # read by pq (pueue-client.sh)
pueue=$1 label=$2 dir=$3 how=$4
# TERM once per run: this command may come again after a lost reply, and a second TERM can cut
# the job's handler (a checkpoint) short; the marker is made atomically before the first TERM
# (the randomized test's remote profile: a cancel's reply lost twice, the job's handler ran twice)
if [ "$how" != kill ] && [ -d "$dir/.caseflow" ] && ! mkdir "$dir/.caseflow/stop-term" 2>/dev/null; then
  echo "@@caseflow term sent before"; echo "@@caseflow end"; exit 0
fi
tasks() {  # pueue's JSON ($1) -> "ID STATE" per task of the label; STATE ? if not read
  printf '%s\n' "$1" | L=$label awk '{
    gsub(/"[0-9]+":[{]"id":/, "\n&"); n = split($0, t, "\n")
    key = "\"label\":\"" ENVIRON["L"] "\",\"status\":"
    for (i = 2; i <= n; i++) {
      id = t[i]; sub(/^"/, "", id); sub(/".*/, "", id)
      st = "?"; at = index(t[i], key)
      if (at) {
        rest = substr(t[i], at + length(key)); sub(/^[{]/, "", rest)
        if (rest ~ /^"[A-Za-z]+"/) { st = substr(rest, 2); sub(/".*/, "", st) }
      }
      print id, st
    }
  }'
}
stop() {  # $1 = id of a running or paused task: signal it as $how says; pueue's answer in $said
  if [ "$how" = kill ]; then said=$(pq kill "$1" 2>&1)
  else said=$(pq kill -s sigterm "$1" 2>&1); fi
}
signalled='' try=0
while :; do
  out=$(pq status --json "label=$label"); rc=$?
  if [ "$rc" -ne 0 ]; then
    if [ "$how" = kill ]; then signal_job "$dir" "$label" KILL
    else signal_job "$dir" "$label" TERM CONT; fi
    printf '%s\n' "$out"; exit "$rc"
  fi
  found=$(tasks "$out") || exit 1
  refused=''
  # shellcheck disable=SC2086  # "ID STATE" pairs, split on purpose (digits and a word)
  set -- $found
  while [ "$#" -ge 2 ]; do
    id=$1 st=$2; shift 2
    case $st in
      Done) continue ;;
      Queued|Stashed|Locked)
        said=$(pq remove "$id" 2>&1) && { echo "@@caseflow removed $id"; continue; } ;;
      Running|Paused)
        if stop "$id"; then
          if [ "$st" = Paused ] && [ "$how" != kill ]; then
            pq kill -s sigcont "$id" > /dev/null 2>&1
          fi
          signalled=1; echo "@@caseflow signalled $id $how"; continue
        fi ;;
      *)  # a state this script cannot read: stopped as pueue allows
        if stop "$id"; then signalled=1; echo "@@caseflow signalled $id $how"; continue; fi
        said=$(pq remove "$id" 2>&1) && { echo "@@caseflow removed $id"; continue; } ;;
    esac
    refused=$said
  done
  [ -z "$refused" ] && break
  try=$((try + 1))
  if [ "$try" -ge 5 ]; then
    [ -n "$signalled" ] || rmdir "$dir/.caseflow/stop-term" 2>/dev/null  # none sent: again later
    printf '%s\n' "$refused"; exit 1
  fi
  sleep 0.1
done
if [ "$how" = kill ]; then signal_job "$dir" "$label" KILL
elif [ -z "$signalled" ]; then signal_job "$dir" "$label" TERM CONT
else signal_strays "$dir" "$label" TERM CONT
fi
echo "@@caseflow end"
