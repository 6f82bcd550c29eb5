#!/bin/sh
# $1 = target, $2 = staging: recreate the staging folder, print the KiB free there (then a NUL),
# then list the target (see listing.sh; exit 3: no target yet).
rm -rf -- "$2" && mkdir -p -- "$2" || exit 2
df -Pk -- "$2" 2>/dev/null | awk 'NR==2 {printf "%s", $4}'
printf '\0'
[ -d "$1" ] || exit 3
listing "$1"
