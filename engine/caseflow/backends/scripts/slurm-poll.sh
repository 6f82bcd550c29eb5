#!/bin/sh
# The Slurm backend's poll. $1 $2, $3 $4, ...: the job id and case folder of every job asked
# about. Sections, each after a line "@@caseflow ...":
#   squeue RC: squeue's exit code, then one line per asked job it still knows:
#     ID|STATE|REASON|EXIT_CODE|NODES|GRES|START|END|RESTARTS|NAME (the name last: it may hold
#     anything; RESTARTS: how many times Slurm requeued the job itself)
#   exit N LINE: the exit code file of the N-th job, when squeue does not list it
#   sacct RC IDS: sacct's lines for those ids (JobID|JobName|State|ExitCode|Start|End|NodeList)
#   end
# Only caseflow's own jobs are asked for (-j): `squeue --json` lists every job on the cluster
# (22.05 ignores its filters); with 5,000 foreign jobs in the queue a poll of 20 jobs was
# 15.5 MB, now 3.7 kB (bench/slurm_poll_bench.py). squeue fails ("Invalid job id specified")
# when the one id it is given is unknown: caseflow reads that as "not listed".
# Times as Unix time (SLURM_TIME_FORMAT=%s): a job's start and end in no one's time zone.
SLURM_TIME_FORMAT=%s; export SLURM_TIME_FORMAT
ids=; i=0
for a in "$@"; do
  if [ $((i % 2)) -eq 0 ]; then ids="$ids${ids:+,}$a"; fi
  i=$((i + 1))
done
out=$(squeue -h -t all -j "$ids" \
  -O 'JobID:|,State:|,Reason:|,exit_code:|,NodeList:|,tres-per-node:|,StartTime:|,EndTime:|,RestartCnt:|,Name:'
); rc=$?
printf '@@caseflow squeue %s\n' "$rc"
if [ -n "$out" ]; then printf '%s\n' "$out"; fi
known=" $(printf '%s\n' "$out" | cut -d '|' -f 1 | tr '\n' ' ')"
missing=; n=0
while [ "$#" -ge 2 ]; do
  case "$known" in
    *" $1 "*) ;;
    *) missing="$missing${missing:+,}$1"
       f=$2/.caseflow/slurm-exit_code
       if [ -r "$f" ] && { IFS= read -r line || [ -n "$line" ]; } < "$f"; then
         printf '@@caseflow exit %s %s\n' "$n" "$line"
       fi ;;
  esac
  n=$((n+1)); shift 2
done
if [ -n "$missing" ]; then
  fields=JobID,JobName,State,ExitCode,Start,End,NodeList
  acct=$(sacct -X -P -n -j "$missing" -o "$fields" 2>/dev/null); rc=$?
  if [ "$rc" -ne 0 ] || [ -z "$acct" ]; then  # no accounting database: the completion log
    acct=$(sacct -c -X -P -n -j "$missing" -o "$fields"); rc=$?
  fi
  printf '@@caseflow sacct %s %s\n%s\n' "$rc" "$missing" "$acct"
fi
echo "@@caseflow end"
