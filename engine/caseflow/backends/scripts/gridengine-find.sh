#!/bin/sh
# The Grid Engine backend's find. $1 = case folder, $2 = job name (the label): the id of the
# case's job, from the submit's record in .caseflow/, else from `qstat -j NAME` (a submit
# whose answer was lost, before its record was written). Exit 3: no job of that name;
# exit 4: qstat failed.
f=$1/.caseflow/gridengine-job
if [ -r "$f" ] && read -r l id < "$f" && [ "$l" = "$2" ]; then echo "$id"; exit 0; fi
out=$(qstat -j "$2" 2>&1); rc=$?
if [ "$rc" -eq 0 ]; then
  printf '%s\n' "$out" | awk '$1 == "job_number:" { print $2; exit }'; exit 0
fi
case $out in *"do not exist"*) exit 3 ;; esac
printf '%s\n' "$out" >&2; exit 4
