#!/bin/sh
# $1 = pid: stop the job's whole session, if it is still our job.
pid=$1
kill -0 "$pid" 2>/dev/null || exit 0
if [ -r "/proc/$pid/cmdline" ]; then
  tr '\000' ' ' < "/proc/$pid/cmdline" | grep -q "caseflow-job" || exit 0
fi
kill -s TERM -- "-$pid" 2>/dev/null || kill -s TERM "$pid" 2>/dev/null
exit 0
