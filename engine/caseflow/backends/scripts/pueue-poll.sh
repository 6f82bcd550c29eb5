#!/bin/sh
# The pueue backend's poll, one command for every job of the host.
# $1 = pueue client (run by pq, pueue-client.sh); $2 $3, $4 $5, ...: the label and case folder
# of every job asked about.
# "@@caseflow status", pueue's JSON, then per job "@@caseflow job N PROCESSES": none (no start
# record of this label), gone, or the process group id when `kill -0` finds the group; then
# "@@caseflow live PGID" for each of those groups with a process that is not a zombie (`kill
# -0` also finds zombies, which an init that reaps slowly, e.g. in a container, leaves for a
# while), or "@@caseflow ps-failed"; then "@@caseflow exit N CODE" for each job's exit record.
# The exit records are read last: a job seen gone has written its record before it ended.
# shellcheck disable=SC2034  # read by pq (pueue-client.sh)
pueue=$1; shift
echo "@@caseflow status"
pq status --json || exit "$?"
n=0; groups=
for a in "$@"; do
  n=$((n+1)); [ $((n % 2)) -eq 1 ] && { label=$a; continue; }
  procs=none
  if [ -r "$a/.caseflow/pueue-job" ] && read -r l g < "$a/.caseflow/pueue-job" &&
      [ "$l" = "$label" ]; then
    case $g in
      ''|*[!0-9]*) ;;
      *) procs=gone; if kill -0 -"$g" 2>/dev/null; then procs=$g; groups="$groups $g"; fi ;;
    esac
  fi
  echo "@@caseflow job $((n / 2 - 1)) $procs"
done
if [ -n "$groups" ]; then
  ps -A -o pgid= -o stat= > /dev/null 2>&1 || echo "@@caseflow ps-failed"
  ps -A -o pgid= -o stat= 2>/dev/null | awk -v want="$groups" '
    BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) g[w[i]] = 1 }
    ($1 in g) && $2 !~ /^Z/ { print "@@caseflow live " $1; delete g[$1] }'
fi
n=0
for a in "$@"; do
  n=$((n+1)); [ $((n % 2)) -eq 1 ] && { label=$a; continue; }
  if [ -r "$a/.caseflow/pueue-exit" ] && read -r l c < "$a/.caseflow/pueue-exit" &&
      [ "$l" = "$label" ]; then
    echo "@@caseflow exit $((n / 2 - 1)) $c"
  fi
done
echo "@@caseflow end"
