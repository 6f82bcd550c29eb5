#!/bin/sh
# $1 = a verified staging folder, $2 = target, then (path, mode, mtime) of each file sent in
# ranges: sets their modes and times, marks the upload complete, renames into place.
s=$1; d=$2; shift 2
while [ "$#" -ge 3 ]; do
  chmod "$2" "$s/$1" && touch -m -d "@$3" "$s/$1" || exit 6
  shift 3
done
mark_uploaded "$s" && { [ ! -e "$d" ] || rm -rf -- "$d"; } && mv -- "$s" "$d"
