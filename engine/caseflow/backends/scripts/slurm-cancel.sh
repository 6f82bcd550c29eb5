#!/bin/sh
# $1 = job id, $2 = job name, $3... = scancel's options (--signal=KILL --full to kill at once):
# cancel the job only if it is still the case's.
id=$1 name=$2; shift 2
err=$(scancel "$@" --name="$name" "$id" 2>&1) && exit 0
case $err in *"Invalid job id"*|*"already complet"*) exit 0 ;; esac
printf '%s\n' "$err" >&2; exit 1
