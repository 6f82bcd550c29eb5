#!/bin/sh
# $1 = folder: its listing (see listing.sh); exit 3 when there is no such folder.
[ -d "$1" ] || exit 3
listing "$1"
