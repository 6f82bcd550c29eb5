#!/bin/sh
# $1 = target, $2 = staging, $3 = minutes after which the staging folder of another upload that
# no attempt has touched since is removed (an upload no case resumes any more; 0: never).
# Keeps what $2 holds (the next attempt resumes from it) and notes this attempt there. Prints
# the KiB free there, then NUL-terminated items: ":staging", what $2 holds ("<type> <size>
# <mtime> <relative path>"), then ":target" and the listing of $1 (see listing.sh) when it
# exists (exit 3: no target yet). No stdin: the client sends no EOF that could arrive after
# the channel's close (paramiko issue #1705, see ssh.py's _exec).
exec < /dev/null
mkdir -p -- "$2/.caseflow" && : > "$2/.caseflow/attempt" || exit 2
rm -rf -- "$2/.caseflow/done-"* "$2/.caseflow/commit-"*
if [ "$3" -gt 0 ]; then
  for o in "${2%/*}"/.staging-*; do
    if [ "$o" = "$2" ] || [ ! -d "$o" ]; then continue; fi
    a=$o/.caseflow/attempt
    [ -e "$a" ] || a=$o
    if [ -n "$(find "$a" -prune -mmin +"$3" 2>/dev/null)" ]; then rm -rf -- "$o"; fi
  done
fi
df -Pk -- "$2" 2>/dev/null | awk 'NR==2 {printf "%s", $4}'
printf '\0:staging\0'
(cd -- "$2" && find . -mindepth 1 -path ./.caseflow -prune \
  -o \( -type f -printf 'f %s %Ts %P\0' \) -o \( -type d -printf 'd 0 0 %P\0' \) \
  -o \( -type l -printf 'l 0 0 %P\0' \) -o -printf '? 0 0 %P\0')
[ -d "$1" ] || exit 3
printf ':target\0'
listing "$1"
