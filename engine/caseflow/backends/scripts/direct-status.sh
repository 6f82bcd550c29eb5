#!/bin/sh
# The direct runner's poll: one line per case folder argument, in order:
# "<n> exit <code>" | "<n> running" | "<n> gone".
n=0
alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/cmdline" ] || return 0
  tr '\000' ' ' < "/proc/$1/cmdline" | grep -q "caseflow-job"
}
for d in "$@"; do
  b=$d/.caseflow
  if [ -s "$b/exit_code" ]; then echo "$n exit $(cat "$b/exit_code")"
  elif [ -d "$b/launched" ] && [ ! -s "$b/pid" ]; then echo "$n running"
  elif alive "$(cat "$b/pid" 2>/dev/null)"; then echo "$n running"
  elif [ -s "$b/exit_code" ]; then echo "$n exit $(cat "$b/exit_code")"
  else echo "$n gone"
  fi
  n=$((n+1))
done
