#!/bin/sh
# The Grid Engine backend's cancel. $1 = job id, $2 = job name (the label): `qdel` the job
# only while it is still the case's (ids start over after the qmaster lost its spool).
# Exit 0 also when the job has ended or the id is another job's.
id=$1 name=$2
out=$(qstat -j "$id" 2>&1); rc=$?
if [ "$rc" -ne 0 ]; then
  case $out in *"do not exist"*) exit 0 ;; esac
  printf '%s\n' "$out" >&2; exit 1
fi
[ "$(printf '%s\n' "$out" | awk '$1 == "job_name:" { print $2; exit }')" = "$name" ] || exit 0
err=$(qdel "$id" 2>&1) && exit 0
case $err in *"does not exist"*) exit 0 ;; esac
printf '%s\n' "$err" >&2; exit 1
