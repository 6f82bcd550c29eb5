#!/bin/sh
# The Grid Engine backend's poll. $1 $2, $3 $4, ...: the job id and case folder of every job
# asked about. Sections, each after a line "@@caseflow ...":
#   zone OFFSET: the host's offset from UTC (`date +%z`): Grid Engine's times have none
#   qstat RC: `qstat -xml` of the user's own jobs (caseflow's, and any others of the user)
#   reason N: for the N-th job when qstat lists it in an error state (E): its error reasons
#   exit N LINE: the exit code file of the N-th job, when qstat does not list it
#   qacct N RC: `qacct -j ID` of the N-th job, when qstat does not list it
#   end
# qstat lists a job until it has ended; its accounting record follows (Grid Engine's
# accounting_flush_time after the end). qacct reads the whole accounting file: it is asked
# only about the jobs that left qstat, once for each.
printf '@@caseflow zone %s\n' "$(date +%z)"
out=$(qstat -u "$(id -un)" -xml); rc=$?
printf '@@caseflow qstat %s\n' "$rc"
if [ -n "$out" ]; then printf '%s\n' "$out"; fi
if [ "$rc" -ne 0 ]; then echo "@@caseflow end"; exit 0; fi
# the XML has one element a line: the ids listed, and those in an error state
listed=" $(printf '%s\n' "$out" | awk '
  /<JB_job_number>/ { n = $0; gsub(/<[^>]*>|[ \t]/, "", n); printf "%s ", n }')"
failing=" $(printf '%s\n' "$out" | awk '
  /<JB_job_number>/ { n = $0; gsub(/<[^>]*>|[ \t]/, "", n) }
  /<state>[^<]*E[^<]*<\/state>/ { printf "%s ", n }')"
n=0
while [ "$#" -ge 2 ]; do
  case $listed in
    *" $1 "*)
      case $failing in
        *" $1 "*) printf '@@caseflow reason %s\n' "$n"
                  qstat -j "$1" 2>/dev/null | grep '^error reason' ;;
      esac ;;
    *) f=$2/.caseflow/gridengine-exit
       if [ -r "$f" ] && { IFS= read -r line || [ -n "$line" ]; } < "$f"; then
         printf '@@caseflow exit %s %s\n' "$n" "$line"
       fi
       acct=$(qacct -j "$1" 2>&1); arc=$?
       printf '@@caseflow qacct %s %s\n%s\n' "$n" "$arc" "$acct" ;;
  esac
  n=$((n + 1)); shift 2
done
echo "@@caseflow end"
