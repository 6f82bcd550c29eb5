#!/bin/sh
# The pueue backend's submit. $1 = case folder, $2 = label, $3 = the job wrapper's text,
# $4... = `env NAME=VALUE... pueue add ...`. Prints "added ID", or "adopted ID" when this
# label's task was added before (its record .caseflow/pueue-task).
cd -- "$1" 2>/dev/null || { echo "case folder $1 is missing" >&2; exit 97; }
label=$2; wrapper=$3; shift 3
mkdir -p .caseflow || exit 98
if [ -r .caseflow/pueue-task ] && read -r l id < .caseflow/pueue-task && [ "$l" = "$label" ]
then echo "adopted $id"; exit 0
fi
rm -f .caseflow/pueue-job .caseflow/pueue-exit .caseflow/pueue-outlived
printf '%s' "$wrapper" > .caseflow/pueue-job.sh.tmp &&
  mv -f .caseflow/pueue-job.sh.tmp .caseflow/pueue-job.sh || exit 98
out=$("$@"); rc=$?
if [ "$rc" -ne 0 ]; then printf '%s\n' "$out"; exit "$rc"; fi
case $out in ''|*[!0-9]*) printf '%s\n' "$out"; exit 94 ;; esac
printf '%s %s\n' "$label" "$out" > .caseflow/pueue-task.tmp &&
  mv -f .caseflow/pueue-task.tmp .caseflow/pueue-task
echo "added $out"
