#!/bin/sh
# The direct runner's submit. $1 = case folder, $2 = marker (the job wrapper's $0, so that a
# reused pid is not taken for the job), $3... = the job's argv (env K=V ... command).
# Starts the job detached in its own session and prints its pid; a second launch in the same
# folder prints the first one's pid instead of starting another job.
cd -- "$1" || { echo "case folder $1 is missing" >&2; exit 97; }
marker=$2; shift 2
mkdir -p .caseflow || exit 98
if ! mkdir .caseflow/launched 2>/dev/null; then
  i=0
  while [ ! -s .caseflow/pid ] && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i+1)); done
  if [ -s .caseflow/pid ]; then cat .caseflow/pid; exit 0; fi
  echo "a launch was started here before but left no pid" >&2; exit 99
fi
# shellcheck disable=SC2016  # the job wrapper's script: expanded by its own shell
setsid sh -c 'echo $$ > .caseflow/pid.tmp && mv .caseflow/pid.tmp .caseflow/pid
"$@" > .caseflow/job.log 2>&1 < /dev/null
rc=$?
echo "$rc" > .caseflow/exit_code.tmp && mv .caseflow/exit_code.tmp .caseflow/exit_code' \
  "$marker" "$@" < /dev/null > /dev/null 2>&1 &
i=0
while [ ! -s .caseflow/pid ] && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i+1)); done
if [ -s .caseflow/pid ]; then cat .caseflow/pid; exit 0; fi
echo "the job did not start within 10 s" >&2; exit 99
