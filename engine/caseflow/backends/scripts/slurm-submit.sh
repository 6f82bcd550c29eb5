#!/bin/sh
# The Slurm backend's submit. $1 = case folder, $2 = job name (the label), $3 = the batch
# script's text, $4... = sbatch's arguments (options, the batch script's path, the job's
# command line). Adopts the job of that name if there is one (the record in .caseflow/, then
# squeue), else submits. Prints "adopted ID" or "submitted ID".
cd -- "$1" 2>/dev/null || { echo "case folder $1 is missing" >&2; exit 97; }
label=$2; script=$3; shift 3
mkdir -p .caseflow || exit 98
record() {
  printf '%s %s\n' "$label" "$1" > .caseflow/slurm-job.tmp &&
    mv -f .caseflow/slurm-job.tmp .caseflow/slurm-job
}
if [ -r .caseflow/slurm-job ] && read -r name id < .caseflow/slurm-job &&
    [ "$name" = "$label" ]; then
  echo "adopted $id"; exit 0
fi
ids=$(squeue -h -t all --name="$label" -o %i) || { [ "$?" -eq 127 ] && exit 127; exit 96; }
for id in $ids; do record "$id"; echo "adopted $id"; exit 0; done
rm -f .caseflow/slurm-exit_code
printf '%s' "$script" > .caseflow/slurm-job.sh.tmp &&
  mv -f .caseflow/slurm-job.sh.tmp .caseflow/slurm-job.sh || exit 98
out=$(sbatch --parsable "$@") || { [ "$?" -eq 127 ] && exit 127; exit 95; }
id=${out%%;*}
case $id in ''|*[!0-9]*) echo "sbatch --parsable printed: $out" >&2; exit 94 ;; esac
record "$id"
echo "submitted $id"
