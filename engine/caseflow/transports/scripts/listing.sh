# shellcheck shell=sh
# A function for the other scripts (prepended to them by caseflow.transports.shell).
# listing FOLDER: one NUL-terminated "<type> <size> <relative path>" per entry of FOLDER (size 0
# unless a file), leaving out caseflow's bookkeeping folder at its top.
listing() {
  (cd -- "$1" && find . -mindepth 1 -path ./.caseflow -prune \
    -o \( -type f -printf 'f %s %P\0' \) -o \( -type d -printf 'd 0 %P\0' \) \
    -o \( -type l -printf 'l 0 %P\0' \) -o -printf '? 0 %P\0')
}
