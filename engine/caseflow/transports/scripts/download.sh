#!/bin/sh
# $1 = parent folder, $2 = ./NAME of the folder in it, then find's tests (no shell sees the
# patterns): packs the files and links found (exit 2: no such folder).
# Hard links go as copies of the files they name (--hard-dereference): caseflow's reader
# takes no hard links (transports/tarstream.py).
cd -- "$1" || exit 2
shift
[ -d "$1" ] || exit 2
find "$@" -print0 | tar --hard-dereference --null --no-recursion -c -f - -T -
