#!/bin/sh
# $1 = staging, $2 = target, $3 = digest of the expected listing, $4 = "sums" when stdin holds
# sha256sum's check lines for every file (verify: checksum); then (path, mode, mtime) of each
# file sent in ranges. Verifies the listing against the digest (exit 4, with the listing) and
# the checksums (exit 8, with sha256sum's complaints), sets the modes and times of the files
# sent in ranges, marks the upload complete, renames into place: one round trip.
# With sums, stdin is read first, whatever happens (else the client's EOF could arrive after
# the channel's close, paramiko issue #1705); without, there is none (see prepare.sh).
s=$1 d=$2 digest=$3 sums=$4
shift 4
c=$s/.caseflow/sums
if [ "$sums" = sums ]; then
  cat > "$c" || { cat > /dev/null; exit 2; }
else
  exec < /dev/null
fi
got=$(listing "$s" | LC_ALL=C sort -z | sha256sum)
if [ "${got%% *}" != "$digest" ]; then listing "$s"; exit 4; fi
if [ "$sums" = sums ]; then
  (cd -- "$s" && LC_ALL=C sha256sum --quiet --strict -c ".caseflow/sums") >&2 || exit 8
fi
rm -f -- "$c"
while [ "$#" -ge 3 ]; do
  chmod "$2" "$s/$1" && touch -m -d "@$3" "$s/$1" || exit 6
  shift 3
done
mark_uploaded "$s" && { [ ! -e "$d" ] || rm -rf -- "$d"; } && mv -- "$s" "$d" || exit 5
echo committed
