#!/bin/sh
# A piece of a job's log, for `caseflow logs -f` and the status page's tail; reads, changes
# nothing. $1 = the log file, $2 = where to start: a byte offset, or -N for the last N bytes;
# $3 = at most this many bytes. Prints "@@caseflow missing" when there is no such file, else
# "@@caseflow log INODE SIZE START" and then the bytes from START as hexadecimal (od: the text
# channel of a command carries any bytes unchanged that way). One `ls` when nothing was added.
f=$1; start=$2; limit=$3
[ -f "$f" ] || { echo '@@caseflow missing'; exit 0; }
set -f
# inode, mode, links, owner, group, size, ...: the file's own line (-L: a link's target)
# shellcheck disable=SC2046
set -- $(ls -dinL -- "$f")
ino=$1; size=$6
case $ino$size in ''|*[!0-9]*) echo "ls gave no size of $f" >&2; exit 1 ;; esac
case $start in
  -*) start=$((size + start)); [ "$start" -ge 0 ] || start=0 ;;
esac
echo "@@caseflow log $ino $size $start"
[ "$start" -lt "$size" ] || exit 0
tail -c +"$((start + 1))" -- "$f" | head -c "$limit" | od -A n -v -t x1
