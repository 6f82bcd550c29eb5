#!/bin/sh
# $1 = case folder, $2 = label: SIGKILL the job's process group if its record is this label's
# (a task pueue lost track of: it cannot stop it any more).
[ -r "$1/.caseflow/pueue-job" ] && read -r l g < "$1/.caseflow/pueue-job" || exit 0
[ "$l" = "$2" ] || exit 0
case $g in ''|*[!0-9]*) exit 0 ;; esac
kill -KILL -"$g" 2>/dev/null
exit 0
