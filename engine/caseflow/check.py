"""`caseflow check`: can the configured hosts be used? A report a person can act on.

Connects (verifying the host key), checks the remote root (exists or can be
created, writable, free space) and the tools the transport and backend need.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backends import make_backend
from .errors import CaseflowError, HostError, PermanentError, TransientError
from .transports import make_transport

TOOLS = {"ssh": ["tar", "find", "sha256sum", "xargs", "dd", "sed", "df", "awk"], "local": []}
BACKEND_TOOLS = {"direct": ["setsid", "sh"],
                 "slurm": ["sbatch", "squeue", "sacct", "scancel", "sh", "tr", "grep", "tail"]}


@dataclass
class Line:
    ok: bool
    text: str

    def __str__(self):
        return f"  {'ok  ' if self.ok else 'FAIL'}  {self.text}"


def check_host(host) -> tuple[str, list[Line]]:
    """Check one host (a `config.HostConfig`)."""
    t = make_transport(host.transport)
    title = f"host {t.name} ({host.transport.kind}"
    if host.transport.kind == "ssh":
        ep = t.conn.endpoint
        title += f", {ep}{', via ' + ep.proxy_jump if ep.proxy_jump else ''}"
    title += ")"
    lines: list[Line] = []
    try:
        try:
            t.run(["true"])
            root = t.path()
            if host.transport.kind == "ssh":
                lines.append(Line(True, f"connected; host key verified against "
                                        f"{t.conn.endpoint.known_hosts}"))
        except (HostError, TransientError, PermanentError) as exc:
            lines.append(Line(False, f"cannot connect: {exc}"))
            return title, lines
        res = t.run(["sh", "-c", 'mkdir -p -- "$1" && [ -w "$1" ] && df -Pk -- "$1" | tail -1',
                     "check", root])
        if res.returncode != 0:
            lines.append(Line(False, f"remote root {root} is not a writable folder: "
                                     f"{res.stderr.strip() or 'not writable'}"))
        else:
            lines.append(Line(True, f"remote root {root} exists and is writable"))
            fields = res.stdout.split()
            if len(fields) >= 4 and fields[3].isdigit():
                free = int(fields[3]) * 1024
                lines.append(Line(free > 1 << 30, f"free space: {free / (1 << 30):.1f} GiB"
                                  + ("" if free > 1 << 30 else " (less than 1 GiB)")))
        tools = TOOLS.get(host.transport.kind, []) + BACKEND_TOOLS.get(host.backend.kind, [])
        if tools:
            res = t.run(["sh", "-c", 'for t in "$@"; do command -v "$t" >/dev/null 2>&1 || '
                                     'echo "$t"; done', "check", *tools])
            missing = res.stdout.split()
            lines.append(Line(not missing, f"tools: {', '.join(tools)}" if not missing else
                              f"missing tools: {', '.join(missing)}"))
        lines += [Line(ok, text) for ok, text in make_backend(host, t).check()]  # the queue
    except CaseflowError as exc:
        lines.append(Line(False, str(exc)))
    finally:
        t.close()
    return title, lines
