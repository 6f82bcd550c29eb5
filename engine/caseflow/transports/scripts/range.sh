#!/bin/sh
# stdin = the bytes of each piece, one after the other; arguments: (file in the staging folder,
# offset, length) of each piece. Writes each piece into its file at its offset (the file made if
# need be, the rest of it kept: a resumed upload sends only what is missing) and fails (exit 7)
# unless all of it arrived; then reads on to the client's EOF, so that the command never ends
# before it (paramiko issue #1705, see ssh.py's _exec).
nl='
'
while [ "$#" -ge 3 ]; do
  if out=$(LC_ALL=C dd of="$1" bs=1M oflag=seek_bytes seek="$2" conv=notrunc \
      iflag=fullblock,count_bytes count="$3" 2>&1 >/dev/null); then
    case "$nl$out" in  # dd's last line: "<bytes> bytes (...) copied, ..."
      *"$nl$3 bytes "*) shift 3; continue ;;
    esac
  fi
  printf '%s\n' "$out" >&2
  cat > /dev/null
  exit 7
done
[ "$(wc -c)" = 0 ] || { echo "more data than the pieces' lengths" >&2; exit 7; }
