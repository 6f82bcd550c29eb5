#!/bin/sh
# Shell functions of the scripts that find a job's processes (put before them by
# caseflow.transports.shell): the direct runner's status and stop, pueue's job wrapper and stop.
# ours PGID LABEL: sets $ours to the pids of the live processes of the job: those whose
# environment holds CASEFLOW_JOB=LABEL (whatever their group: a child may make a group or a
# session of its own) and the members of process group PGID (the job's, led by its wrapper);
# and $strays to those of them outside that group (a signal to the group misses them).
# A group id is not reused while the group has a member, but once it is empty a new group may
# get the number: a member counts only while some process still carries the label, or the
# group's leader (the wrapper) is alive. Needs /proc; without it $ours stays empty. Zombies do
# not count (they hold no GPU). `stat` is read whole: a command name may hold a newline.
ours() {
  ours='' strays=''
  [ -d /proc/self ] || return 0
  labelled=" $(grep -lzxF -- "CASEFLOW_JOB=$2" /proc/[0-9]*/environ 2>/dev/null | tr '\n' ' ')"
  for f in /proc/[0-9]*/stat; do
    l=
    { while IFS= read -r x || [ -n "$x" ]; do l="$l $x"; done < "$f"; } 2>/dev/null
    [ -n "$l" ] || continue
    l=${l##*) }
    p=${f#/proc/}; p=${p%/stat}
    # shellcheck disable=SC2086  # the fields of /proc/PID/stat after the command name
    set -- "$1" "$2" $l
    [ "$3" != Z ] || continue
    case $labelled in *" /proc/$p/environ "*)
      ours="$ours $p"
      [ "$5" = "$1" ] || strays="$strays $p"
      continue ;;
    esac
    if [ "$5" = "$1" ] && [ "$labelled" != " " ]; then ours="$ours $p"; fi
  done
  return 0
}
