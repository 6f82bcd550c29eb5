#!/bin/sh
# $1 = target, $2 = staging, $3 = minutes after which the staging folder of another upload that
# no attempt has touched since is removed (an upload no case resumes any more; 0: not now).
# Keeps what $2 holds (the next attempt resumes from it) and notes this attempt there. Prints
# df's answer for $2, then NUL-terminated items: ":staging", what $2 held ("<type> <size>
# <mtime> <relative path>"), then ":target" and the listing of $1 (see listing.sh) when it
# exists (exit 3: no target yet). No stdin: the client sends no EOF that could arrive after
# the channel's close (paramiko issue #1705, see ssh.py's _exec).
# A fresh upload costs two processes here (mkdir, df): every process the upload of a tiny
# case starts on the host is a few milliseconds of its time.
exec < /dev/null
t=$1 s=$2
# (`true >`, not `: >`: a failed redirection of a special builtin such as `:` ends the shell)
held=
[ -d "$s" ] && held=1
[ -d "$s/.caseflow" ] || mkdir -p -- "$s/.caseflow" || exit 2
true > "$s/.caseflow/attempt" || exit 2
if [ "$3" -gt 0 ]; then
  find "${s%/*}"/.staging-*/.caseflow/attempt -prune -mmin +"$3" \
    -exec sh -c 'for a do rm -rf -- "${a%/.caseflow/attempt}"; done' caseflow {} + 2>/dev/null
fi
df -Pk -- "$s" 2>/dev/null
printf '\0:staging\0'
if [ -n "$held" ]; then
  (cd -- "$s" && find . -mindepth 1 -path ./.caseflow -prune \
    -o \( -type f -printf 'f %s %Ts %P\0' \) -o \( -type d -printf 'd 0 0 %P\0' \) \
    -o \( -type l -printf 'l 0 0 %P\0' \) -o -printf '? 0 0 %P\0')
fi
[ -d "$t" ] || exit 3
printf ':target\0'
listing "$t"
