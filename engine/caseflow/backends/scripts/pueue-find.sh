#!/bin/sh
# The pueue backend's search for a case's task by its label (a submit whose reply was lost).
# $1 = pueue client (run by pq, pueue-client.sh), $2 = label, $3 = case folder. Prints
# "@@caseflow status", pueue's JSON of the label's tasks (`status --json label=LABEL`), then
# "@@caseflow record ID" when the case folder holds the submit's record of this label
# (.caseflow/pueue-task), then "@@caseflow end".
# shellcheck disable=SC2034  # read by pq (pueue-client.sh)
pueue=$1
echo "@@caseflow status"
pq status --json "label=$2" || exit "$?"
echo
if [ -r "$3/.caseflow/pueue-task" ] && read -r l id < "$3/.caseflow/pueue-task" &&
    [ "$l" = "$2" ]; then
  echo "@@caseflow record $id"
fi
echo "@@caseflow end"
