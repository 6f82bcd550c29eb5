#!/bin/sh
# The Slurm backend's poll. $1 $2, $3 $4, ...: the job id and case folder of every job asked
# about. Sections, each after a line "@@caseflow ...": squeue (its JSON) or squeue-failed RC,
# exit N LINE (the exit code file of the N-th job, when squeue does not list it),
# sacct RC IDS (sacct's lines for those ids), end.
out=$(squeue --json); rc=$?
if [ "$rc" -ne 0 ]; then printf '@@caseflow squeue-failed %s\n' "$rc"; exit 0; fi
printf '@@caseflow squeue\n%s\n' "$out"
known=" $(printf '%s' "$out" | tr -d ' \t\r\n' | grep -o '"job_id":[0-9]*' |
  tr -cd '0-9\n' | tr '\n' ' ')"
missing=; n=0
while [ "$#" -ge 2 ]; do
  case "$known " in
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
  fields=JobID,JobName,State,ExitCode
  acct=$(sacct -X -P -n -j "$missing" -o "$fields" 2>/dev/null); rc=$?
  if [ "$rc" -ne 0 ] || [ -z "$acct" ]; then  # no accounting database: the completion log
    acct=$(sacct -c -X -P -n -j "$missing" -o "$fields"); rc=$?
  fi
  printf '@@caseflow sacct %s %s\n%s\n' "$rc" "$missing" "$acct"
fi
echo "@@caseflow end"
