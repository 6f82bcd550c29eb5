#!/bin/bash
# The naive way, as a plain script: what the seed's design does, one SSH connection per step.
# For each case folder: `scp -r` it to the host, then `ssh` to start its job detached (as the
# direct runner does: the exit code lands in a file); then, every POLL seconds, one `ssh` per
# unfinished case to read its exit code, until every job has ended.
#
#   naive_pipeline.sh SRC_DIR REMOTE_ROOT USER@HOST PORT POLL_SECONDS JOB [ssh options...]
set -eu
src=$1 root=$2 dest=$3 port=$4 poll=$5 job=$6
shift 6
opts=("$@")

cases=()
for dir in "$src"/*/; do
  name=$(basename "$dir")
  cases+=("$name")
  scp -q -r -P "$port" "${opts[@]}" "$dir" "$dest:$root/$name"
  ssh -p "$port" "${opts[@]}" "$dest" \
    "cd '$root/$name' && { setsid sh -c '{ $job; } > job.log 2>&1; echo \$? > exit_code' \
     < /dev/null > /dev/null 2>&1 & }"
done

pending=("${cases[@]}")
while [ "${#pending[@]}" -gt 0 ]; do
  still=()
  for name in "${pending[@]}"; do
    code=$(ssh -p "$port" "${opts[@]}" "$dest" "cat '$root/$name/exit_code' 2>/dev/null || echo running")
    if [ "$code" = running ]; then still+=("$name"); fi
  done
  pending=("${still[@]+"${still[@]}"}")
  if [ "${#pending[@]}" -gt 0 ]; then sleep "$poll"; fi
done
