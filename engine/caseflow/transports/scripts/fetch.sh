#!/bin/sh
# $1 = parent folder, $2 = the case folder's name in it, $3 = "changed" (only what changed after
# the upload's mark, when there is one) or "all"; then find's tests. Packs the regular files
# found, their paths starting with ./$2/ (exit 20: no such folder).
# Hard links go as copies of the files they name (--hard-dereference): caseflow's reader
# takes files and folders only (transports/tarstream.py).
cd -- "$1" 2>/dev/null || exit 20
d=./$2; mode=$3; shift 3
[ -d "$d" ] || exit 20
m=$d/.caseflow/uploaded
if [ "$mode" = changed ] && [ -e "$m" ]; then set -- "$@" -cnewer "$m"; fi
find "$d" "$@" -print0 | tar --hard-dereference --null --no-recursion -c -f - -T -
