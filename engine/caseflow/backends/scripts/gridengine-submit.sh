#!/bin/sh
# The Grid Engine backend's submit. $1 = case folder, $2 = job name (the label), $3 = the job
# script's text, $4... = qsub's arguments (options, the job script's path, its arguments).
# Adopts the job of that name if there is one (the record .caseflow/gridengine-job, then
# `qstat -j NAME`), else submits. Prints "adopted ID" or "submitted ID"; the exit codes are
# caseflow.backends.scripted's.
cd -- "$1" 2>/dev/null || { echo "case folder $1 is missing" >&2; exit 97; }
label=$2; script=$3; shift 3
mkdir -p .caseflow || exit 98
record() {
  printf '%s %s\n' "$label" "$1" > .caseflow/gridengine-job.tmp &&
    mv -f .caseflow/gridengine-job.tmp .caseflow/gridengine-job
}
if [ -r .caseflow/gridengine-job ] && read -r name id < .caseflow/gridengine-job &&
    [ "$name" = "$label" ]; then
  echo "adopted $id"; exit 0
fi
# `qstat -j NAME` lists the jobs of that name; none: exit 1, "Following jobs do not exist"
out=$(qstat -j "$label" 2>&1); rc=$?
if [ "$rc" -eq 0 ]; then
  id=$(printf '%s\n' "$out" | awk '$1 == "job_number:" { print $2; exit }')
  case $id in ''|*[!0-9]*) printf 'qstat -j printed: %s\n' "$out" >&2; exit 96 ;; esac
  record "$id"; echo "adopted $id"; exit 0
fi
[ "$rc" -eq 127 ] && { printf '%s\n' "$out" >&2; exit 127; }
case $out in
  *"do not exist"*) ;;
  *) printf '%s\n' "$out" >&2; exit 96 ;;
esac
rm -f .caseflow/gridengine-exit
printf '%s' "$script" > .caseflow/gridengine-job.sh.tmp &&
  mv -f .caseflow/gridengine-job.sh.tmp .caseflow/gridengine-job.sh || exit 98
out=$(qsub -terse "$@") || { [ "$?" -eq 127 ] && exit 127; exit 95; }
case $out in ''|*[!0-9]*) printf 'qsub -terse printed: %s\n' "$out" >&2; exit 94 ;; esac
record "$out"
echo "submitted $out"
