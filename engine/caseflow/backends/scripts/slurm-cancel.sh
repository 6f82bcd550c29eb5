#!/bin/sh
# $1 = job id, $2 = job name: cancel the job only if it is still the case's.
err=$(scancel --name="$2" "$1" 2>&1) && exit 0
case $err in *"Invalid job id"*|*"already complet"*) exit 0 ;; esac
printf '%s\n' "$err" >&2; exit 1
