#!/bin/sh
# The pueue backend's poll, one command for every job of the host.
# $1 = pueue client (run by pq, pueue-client.sh); $2 $3, $4 $5, ...: the label and case folder
# of every job asked about.
# "@@caseflow status", pueue's JSON, then per job "@@caseflow job N PROCESSES": none (no start
# record of this label), alive or gone (a job whose processes carry its label, pueue-job.sh:
# alive while any process whose environment holds CASEFLOW_JOB=LABEL runs, whatever its group;
# one pass of grep over /proc/*/environ for all such jobs; a zombie's environment is empty),
# or for a job of an older wrapper, or where /proc or grep -z is missing: gone, or the process
# group id when `kill -0` finds the group; then "@@caseflow live PGID" for each of those groups
# with a process that is not a zombie (`kill -0` also finds zombies, which an init that reaps
# slowly, e.g. in a container, leaves for a while), or "@@caseflow ps-failed"; then "@@caseflow
# exit N CODE" for each job's exit record; for a job without one whose processes are gone,
# "@@caseflow outlived N" when it was seen alive after the pueued that started it had gone
# (.caseflow/pueue-outlived, below), else "@@caseflow daemon N gone" when the pueued that
# started it (its start record's "PID:START", pueue-job.sh) no longer runs: its pid is gone, a
# zombie, or a process started at another time (each pid asked about once).
# A job seen alive while the pueued that started it no longer runs, and another pueued answers
# after that was seen, outlived a restart of pueued (a reboot leaves no process of it): the poll
# writes its label to .caseflow/pueue-outlived (once). Its later end without an exit record is
# then the job's (someone killed it under the new daemon), not a loss to the infrastructure.
# The exit records are read last: a job seen gone has written its record before it ended.
# shellcheck disable=SC2034  # read by pq (pueue-client.sh)
pueue=$1; shift
echo "@@caseflow status"
pq status --json || exit "$?"
scan=  # the label scan: /proc and a grep that reads NUL-separated records
[ -r /proc/self/environ ] && printf 'x\0' | grep -qzxF x 2>/dev/null && scan=1
n=0 groups='' wanted=''
for a in "$@"; do
  n=$((n+1)); [ $((n % 2)) -eq 1 ] && { label=$a; continue; }
  procs=none
  if [ -r "$a/.caseflow/pueue-job" ] && read -r l g _ k < "$a/.caseflow/pueue-job" &&
      [ "$l" = "$label" ]; then
    if [ "$k" = CASEFLOW_JOB ] && [ -n "$scan" ]; then
      procs=label wanted="${wanted}CASEFLOW_JOB=$label
"
    else
      case $g in
        ''|*[!0-9]*) ;;
        *) procs=gone; if kill -0 -"$g" 2>/dev/null; then procs=$g; groups="$groups $g"; fi ;;
      esac
    fi
  fi
  eval "procs_$((n / 2 - 1))=\$procs"
done
labels=' '  # the labels of live processes, " L1 L2 ... "
if [ -n "$wanted" ]; then
  # shellcheck disable=SC2062  # the files' names, not a pattern (that is -f -)
  labels=" $(printf '%s' "$wanted" | grep -Hzx -F -f - /proc/[0-9]*/environ 2>/dev/null |
    tr '\0' '\n' | sed 's/^[^:]*:CASEFLOW_JOB=//' | tr '\n' ' ')"
fi
n=0
for a in "$@"; do
  n=$((n+1)); [ $((n % 2)) -eq 1 ] && { label=$a; continue; }
  i=$((n / 2 - 1))
  eval "procs=\$procs_$i"
  if [ "$procs" = label ]; then
    case $labels in *" $label "*) procs=alive ;; *) procs=gone ;; esac
    eval "procs_$i=\$procs"
  fi
  echo "@@caseflow job $i $procs"
done
live=' ' ps_failed=''
if [ -n "$groups" ]; then
  ps -A -o pgid= -o stat= > /dev/null 2>&1 || { echo "@@caseflow ps-failed"; ps_failed=1; }
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
n=0 outlived=''
for a in "$@"; do
  n=$((n+1)); [ $((n % 2)) -eq 1 ] && { label=$a; continue; }
  i=$((n / 2 - 1))
  if [ -r "$a/.caseflow/pueue-exit" ] && read -r l c < "$a/.caseflow/pueue-exit" &&
      [ "$l" = "$label" ]; then
    echo "@@caseflow exit $i $c"
  elif [ -r "$a/.caseflow/pueue-job" ] && read -r l _ d _ < "$a/.caseflow/pueue-job" &&
      [ "$l" = "$label" ]; then
    eval "procs=\$procs_$i"
    case $procs in
      alive) up=1 ;;
      gone|none|label) up= ;;
      *) up=$ps_failed; case $live in *" $procs "*) up=1 ;; esac ;;
    esac
    seen=
    [ -r "$a/.caseflow/pueue-outlived" ] && read -r l < "$a/.caseflow/pueue-outlived" &&
      [ "$l" = "$label" ] && seen=1
    if [ -n "$up" ]; then
      if [ -z "$seen" ] && daemon_gone "$d"; then outlived="$outlived $i"; fi
    elif [ -n "$seen" ]; then echo "@@caseflow outlived $i"
    elif daemon_gone "$d"; then echo "@@caseflow daemon $i gone"
    fi
  fi
done
# another pueued answers now, after the one that started these jobs was seen gone: they
# outlived its restart (a pueued that answered the status above may have been that one)
if [ -n "$outlived" ] && pq status --json > /dev/null 2>&1; then
  n=0
  for a in "$@"; do
    n=$((n+1)); [ $((n % 2)) -eq 1 ] && { label=$a; continue; }
    case "$outlived " in *" $((n / 2 - 1)) "*)
      printf '%s\n' "$label" > "$a/.caseflow/pueue-outlived" 2>/dev/null ;;
    esac
  done
fi
echo "@@caseflow end"
