#!/bin/sh
# $1 = folder: "<sha256>  ./<path>" per file (sha256sum escapes odd names with a leading \).
cd "$1" && find . -path ./.caseflow -prune -o -type f -print0 | xargs -0 -r sha256sum --
