#!/bin/sh
# stdin = bytes $2.. of a file, $3 of them; $1 = the file in the staging folder. Writes them
# there (the file is made if need be) and fails (exit 7) unless all $3 of them arrived.
out=$(LC_ALL=C dd of="$1" bs=1M oflag=seek_bytes seek="$2" conv=notrunc iflag=fullblock \
  2>&1 >/dev/null); rc=$?
n=$(printf '%s\n' "$out" | sed -n 's/^\([0-9][0-9]*\) bytes.*/\1/p' | tail -n 1)
[ "$rc" = 0 ] && [ "$n" = "$3" ] && exit 0
printf '%s\n' "$out" >&2
exit 7
