"""`caseflow check`: can the configured hosts be used? A report a person can act on.

Connects (verifying the host key), checks the remote root (exists or can be
made, writable, free space) and the tools the transport and backend need. It
makes nothing, here or on the host: a missing folder is reported as one that
can be made.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import backends, transports
from .backends import make_backend
from .errors import CaseflowError, HostError, PermanentError, TransientError
from .transports import make_transport

# prints "exists" (the root is a writable folder) or the nearest existing folder above it
# (writable, so the root can be made there), then df's line for that folder; makes nothing
_ROOT_SCRIPT = r"""
d=$1
if [ -d "$d" ]; then
  [ -w "$d" ] || { echo "$d is not writable" >&2; exit 1; }
  echo exists
else
  while [ ! -e "$d" ]; do d=$(dirname -- "$d"); done
  [ -d "$d" ] || { echo "$d is a file, not a folder" >&2; exit 1; }
  [ -w "$d" ] || { echo "it does not exist and $d is not writable" >&2; exit 1; }
  printf '%s\n' "$d"
fi
df -Pk -- "$d" | tail -1
"""


@dataclass
class Line:
    ok: bool
    text: str

    def __str__(self):
        return f"  {'ok  ' if self.ok else 'FAIL'}  {self.text}"


def check_host(host) -> tuple[str, list[Line]]:
    """Check one host (a `config.HostConfig`)."""
    t = make_transport(host.transport)
    title = f"host {t.name} ({host.transport.kind}{t.describe()})"
    lines: list[Line] = []
    try:
        try:
            for ok, text in t.check_access():
                lines.append(Line(ok, text))
            if not all(line.ok for line in lines):
                return title, lines
            root = t.path()
        except (HostError, TransientError, PermanentError) as exc:
            lines.append(Line(False, f"cannot connect: {exc}"))
            return title, lines
        res = t.run(["sh", "-c", _ROOT_SCRIPT, "check", root])
        out = res.stdout.splitlines()
        if res.returncode != 0 or not out:
            lines.append(
                Line(
                    False,
                    f"remote root {root} is not a writable folder: "
                    f"{res.stderr.strip() or 'not writable'}",
                )
            )
        else:
            if out[0] == "exists":
                lines.append(Line(True, f"remote root {root} exists and is writable"))
            else:
                lines.append(
                    Line(
                        True,
                        f"remote root {root} does not exist yet; it can be "
                        f"made ({out[0]} is writable)",
                    )
                )
            fields = (out[1] if len(out) > 1 else "").split()
            if len(fields) >= 4 and fields[3].isdigit():
                free = int(fields[3]) * 1024
                lines.append(
                    Line(
                        free > 1 << 30,
                        f"free space: {free / (1 << 30):.1f} GiB"
                        + ("" if free > 1 << 30 else " (less than 1 GiB)"),
                    )
                )
        tools = [
            *transports.adapter(host.transport.kind).tools,
            *backends.adapter(host.backend.kind).tools,
        ]
        if tools:
            res = t.run(
                [
                    "sh",
                    "-c",
                    'for t in "$@"; do command -v "$t" >/dev/null 2>&1 || echo "$t"; done',
                    "check",
                    *tools,
                ]
            )
            missing = res.stdout.split()
            lines.append(
                Line(
                    not missing,
                    f"tools: {', '.join(tools)}"
                    if not missing
                    else f"missing tools: {', '.join(missing)}",
                )
            )
        lines += [Line(ok, text) for ok, text in make_backend(host, t).check()]  # the queue
    except CaseflowError as exc:
        lines.append(Line(False, str(exc)))
    finally:
        t.close()
    return title, lines


def check_local(config) -> list[Line]:
    """This machine: what anyone could change, and the folders `caseflow run` will make."""
    from .config import permission_warnings
    from .run_folders import run_folders

    lines = [Line(False, w) for w in permission_warnings(config)]
    for key, folder in run_folders(config):
        if not folder.is_dir():
            lines.append(
                Line(True, f"{key}: {folder} does not exist yet; made by `caseflow run` at start")
            )
    return lines
