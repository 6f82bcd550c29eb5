#!/bin/sh
# The pueue backend's poll, one command for every job of the host.
# $1 = pueue client (run by pq, pueue-client.sh); $2 $3, $4 $5, ...: the label and case folder
# of every job asked about.
# "@@caseflow status", pueue's JSON, then per job "@@caseflow job N PROCESSES": none (no start
# record of this label), gone, or the process group id when `kill -0` finds the group; then
# "@@caseflow live PGID" for each of those groups with a process that is not a zombie (`kill
# -0` also finds zombies, which an init that reaps slowly, e.g. in a container, leaves for a
# while), or "@@caseflow ps-failed"; then "@@caseflow exit N CODE" for each job's exit record,
# or, for a job without one whose group has no live process, "@@caseflow daemon N gone" when
# the pueued that started it (its start record's "PID:START", pueue-job.sh) no longer runs: its
# pid is gone, a zombie, or a process started at another time (each pid asked about once).
# The exit records are read last: a job seen gone has written its record before it ended.
# shellcheck disable=SC2034  # read by pq (pueue-client.sh)
pueue=$1; shift
echo "@@caseflow status"
pq status --json || exit "$?"
n=0; groups=
for a in "$@"; do
  n=$((n+1)); [ $((n % 2)) -eq 1 ] && { label=$a; continue; }
  procs=none
  if [ -r "$a/.caseflow/pueue-job" ] && read -r l g _ < "$a/.caseflow/pueue-job" &&
      [ "$l" = "$label" ]; then
    case $g in
      ''|*[!0-9]*) ;;
      *) procs=gone; if kill -0 -"$g" 2>/dev/null; then procs=$g; groups="$groups $g"; fi ;;
    esac
  fi
  echo "@@caseflow job $((n / 2 - 1)) $procs"
done
live=' '
if [ -n "$groups" ]; then
  ps -A -o pgid= -o stat= > /dev/null 2>&1 || echo "@@caseflow ps-failed"
  for g in $(ps -A -o pgid= -o stat= 2>/dev/null | awk -v want="$groups" '
      BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) g[w[i]] = 1 }
      ($1 in g) && $2 !~ /^Z/ { print $1; delete g[$1] }'); do
    echo "@@caseflow live $g"; live="$live$g "
  done
fi
daemons=' '  # "PID=STAT+START" (ps's words, spaces taken out; "-": ps said nothing) or "PID=gone"
daemon_gone() {  # $1 = a start record's "PID:START": that pueued no longer runs?
  p=${1%%:*} was=${1#*:}
  case $p in ''|*[!0-9]*) return 1 ;; esac
  case $daemons in
    *" $p="*) ;;
    *) if kill -0 "$p" 2>/dev/null; then
         now=$(LC_ALL=C TZ=UTC0 ps -o stat= -o lstart= -p "$p" 2>/dev/null | tr -d ' ')
         daemons="$daemons$p=${now:--} "
       else daemons="$daemons$p=gone "; fi ;;
  esac
  now=${daemons#*" $p="}; now=${now%% *}
  case $now in gone|Z*) return 0 ;; -) return 1 ;; esac
  [ -n "$was" ] && [ "${now%"$was"}" = "$now" ]  # started at another time: another process
}
n=0
for a in "$@"; do
  n=$((n+1)); [ $((n % 2)) -eq 1 ] && { label=$a; continue; }
  if [ -r "$a/.caseflow/pueue-exit" ] && read -r l c < "$a/.caseflow/pueue-exit" &&
      [ "$l" = "$label" ]; then
    echo "@@caseflow exit $((n / 2 - 1)) $c"
  elif [ -r "$a/.caseflow/pueue-job" ] && read -r l g d < "$a/.caseflow/pueue-job" &&
      [ "$l" = "$label" ]; then
    case $live in *" $g "*) continue ;; esac
    if daemon_gone "$d"; then echo "@@caseflow daemon $((n / 2 - 1)) gone"; fi
  fi
done
echo "@@caseflow end"
