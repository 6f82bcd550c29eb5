#!/bin/sh
# $1 = parent folder, $2 = the case folder's name in it, $3 = "changed" (only what changed after
# the upload's mark, when there is one) or "all"; $4 = a file (relative to the case folder, the
# job's log) whose last $5 bytes come too, as .caseflow/fetched-tail, or "-"; then find's tests.
# Packs the regular files found, their paths starting with ./$2/ (exit 20: no such folder).
# Hard links go as copies of the files they name (--hard-dereference): caseflow's reader
# takes files and folders only (transports/tarstream.py).
cd -- "$1" 2>/dev/null || exit 20
d=./$2; mode=$3; tail=$4; limit=$5; shift 5
[ -d "$d" ] || exit 20
m=$d/.caseflow/uploaded
if [ "$mode" = changed ] && [ -e "$m" ]; then set -- "$@" -cnewer "$m"; fi
kept=$d/.caseflow/fetched-tail
if [ "$tail" != - ]; then
  [ ! -e "$kept" ] || rm -f -- "$kept"  # (a process less when there is none: most times)
  if [ -f "$d/$tail" ]; then
    # (a copy that cannot be made, on a full disk, is left out: the caller asks for it alone)
    [ -d "$d/.caseflow" ] || mkdir -- "$d/.caseflow" 2>/dev/null
    tail -c "$limit" -- "$d/$tail" > "$kept" 2>/dev/null || rm -f -- "$kept"
  fi
fi
{
  find "$d" "$@" -print0
  if [ "$tail" != - ] && [ -f "$kept" ]; then printf '%s\0' "$kept"; fi
} | tar --hard-dereference --null --no-recursion -c -f - -T -
rc=$?
[ ! -e "$kept" ] || rm -f -- "$kept"
exit "$rc"
