#!/bin/sh
# The job's log, byte for byte. $1 = case folder, $2 = label, $3 = at most this many bytes (its
# end). Prints the last $3 bytes of .caseflow/job.log as hexadecimal (od): the text channel of a
# command carries any bytes unchanged that way. Exit 3: no log of this label's job there (not
# started, or started by a wrapper that did not write one: then pueue's log has the output).
cd -- "$1" 2>/dev/null || exit 3
[ -r .caseflow/pueue-job ] && read -r l _ < .caseflow/pueue-job && [ "$l" = "$2" ] || exit 3
[ -f .caseflow/job.log ] || exit 3
tail -c "$3" .caseflow/job.log | od -A n -v -t x1
