# shellcheck shell=sh
# A function for the other scripts (prepended to them by caseflow.transports.shell).
# mark_uploaded FOLDER: mark when the upload of a verified staging folder was complete
# (results are what changed after this mark), then wait until the file system's clock has
# moved past the mark's time (a probe file newer than the mark), so that nothing the job writes
# can share it: at most a clock tick (4 ms here with coarse timestamps, 10 ms at most; ~1 ms
# with fine-grained ones) instead of a fixed 20 ms sleep. The probe stays in the bookkeeping
# folder (removing it would cost a process).
mark_uploaded() {
  m="$1/.caseflow/uploaded"; t="$1/.caseflow/.tick"
  { [ -d "$1/.caseflow" ] || mkdir -p -- "$1/.caseflow"; } && : > "$m" && i=0 &&
    while : > "$t" && [ -z "$(find "$t" -newer "$m")" ] && [ "$i" -lt 200 ]; do
      i=$((i + 1))
    done
}
