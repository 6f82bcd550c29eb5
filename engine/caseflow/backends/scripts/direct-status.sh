#!/bin/sh
# The direct runner's poll. Arguments: the host's boot id file, then triples of the job's pid
# (its task id; "-" when unknown: then .caseflow/pid is read), its case folder and its label
# (CASEFLOW_JOB). One line per triple, in order: "<n> exit <code> <started> <ended>" |
# "<n> running" | "<n> gone" | "<n> rebooted" (gone, and the boot id its launch noted in
# .caseflow/boot_id is not the host's now: the host rebooted under the job); started and ended
# are the job wrapper's notes of its times ("-" where there is none: a job launched by an older
# caseflow).
# Shell builtins only, in one pass, few system calls: a poll of 1,000 running jobs took
# 2.1-2.6 s when each job cost a cat, a tr and a grep (a process each); with builtins only it
# still made 37 system calls a job (most of them saving and restoring file descriptors for the
# redirections, and reading the pid file a byte at a time), now 4 (strace -c: a stat of
# exit_code, kill -0, and test -ef's two stats).
# A job is running while its wrapper's pid (the session leader) is alive AND works in the case
# folder: a pid reused by another process is not taken for the job. The wrapper outlives a
# TERM and waits for every process of its group (direct-launch.sh), so a job that takes its
# time to stop is seen running until it has. A wrapper gone without an exit code (killed
# alone) leaves the job running while a process of its group carries its label (`ours`,
# job-group.sh): its GPU is not free before (the /proc scan only in that rare case).
# "is the same file": test's -ef where the shell has it (dash, bash, busybox, ksh: two stats;
# it is not POSIX), else cd -P to both and compare
# shellcheck disable=SC3013
exec 2>/dev/null  # nothing on stderr is read: no redirection of it per job
if [ / -ef / ]; then
  same() { [ "$1" -ef "$2" ]; }
else
  unset CDPATH
  cd -P . || cd -P / || exit 1
  here=$PWD
  same() {
    cd -P -- "$1" || { cd -- "$here" || exit 1; return 1; }
    there=$PWD
    cd -P -- "$2" && [ "$PWD" = "$there" ]; same=$?
    cd -- "$here" || exit 1
    return "$same"
  }
fi
proc=
[ -d /proc/self ] && proc=1  # without /proc, kill -0 is all there is to know
# The job runs in the case folder and can write its bookkeeping files: what is read from them
# is passed on only when it is a number ("bad" or "-" else). A space or a carriage return in
# its started file made its line unreadable (its case never ended and kept its slot), or a
# line of every other job of the batch (they were failed): a review, issue 27.
exited() {  # $1 = bookkeeping folder: its exit code file, read into $code
  code=
  [ -s "$1/exit_code" ] && { read -r code || [ -n "$code" ]; } < "$1/exit_code"
  case $code in '') return 1 ;; - | *[!0-9-]* | ?*-*) code=bad ;; esac
}
noted() {  # $1 = bookkeeping folder: the job's start and end times, into $times
  times=
  for f in started ended; do
    t=
    [ -s "$1/$f" ] && { read -r t || [ -n "$t" ]; } < "$1/$f"
    case $t in '' | *[!0-9.]*) t=- ;; esac
    times="$times $t"
  done
}
boot=  # the host's boot id now (none: it cannot be read, and no job is said rebooted)
{ read -r boot || [ -n "$boot" ]; } < "$1"
shift
rebooted() {  # $1 = bookkeeping folder: its launch noted another boot id than the host's now
  was=
  [ -n "$boot" ] && [ -s "$1/boot_id" ] && { read -r was || [ -n "$was" ]; } < "$1/boot_id"
  [ -n "$was" ] && [ "$was" != "$boot" ]
}
n=0
out=
while [ "$#" -ge 3 ]; do
  pid=$1 d=$2 b=$2/.caseflow label=$3
  shift 3
  if [ "$pid" = - ]; then
    pid=
    { read -r pid || [ -n "$pid" ]; } < "$b/pid"
  fi
  # an exit code that is no number ("bad": a stray write, the job's own?) is said only once
  # no process of the job is left (the engine cannot read it: UNREADABLE)
  if exited "$b" && [ "$code" != bad ]; then s="exit $code"
  elif [ -n "$pid" ] && kill -0 "$pid" && { [ -z "$proc" ] || same "/proc/$pid/cwd" "$d"; }
  then s=running
  elif [ -d "$b/launched" ] && [ ! -s "$b/pid" ]; then s=running  # its pid is not written yet
  elif exited "$b" && [ "$code" != bad ]; then s="exit $code"  # it ended since the first look
  elif [ -n "$pid" ] && [ -n "$proc" ] && ours "$pid" "$label" && [ -n "$ours" ]; then s=running
  elif exited "$b"; then s="exit $code"
  elif rebooted "$b"; then s=rebooted
  else s=gone
  fi
  case $s in exit*) noted "$b"; s="$s$times" ;; esac
  out="$out$n $s
"
  n=$((n + 1))
done
printf '%s' "$out"
