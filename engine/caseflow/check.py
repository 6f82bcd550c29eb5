"""`caseflow check`: can the configured hosts be used? A report a person can act on.

Connects (verifying the host key), checks the remote root (exists or can be
made, writable, free space) and the tools the transport and backend need. It
makes nothing, here or on the host: a missing folder is reported as one that
can be made.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backends import make_backend
from .errors import CaseflowError, HostError, PermanentError, TransientError
from .transports import make_transport

TOOLS = {"ssh": ["tar", "find", "sha256sum", "xargs", "dd", "sed", "df", "awk"], "local": []}
TOOLS["openssh"] = TOOLS["ssh"]
BACKEND_TOOLS = {"direct": ["setsid", "sh"],
                 "slurm": ["sbatch", "squeue", "sacct", "scancel", "sh", "tr", "grep", "tail"]}


# prints "exists" (the root is a writable folder) or the nearest existing folder above it
# (writable, so the root can be made there), then df's line for that folder; makes nothing
_ROOT_SCRIPT = r'''
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
'''


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
    if host.transport.kind == "openssh":
        title += f", {host.transport.host} through its master connection"
    title += ")"
    lines: list[Line] = []
    try:
        if host.transport.kind == "openssh" and not _master_up(t, host, lines):
            return title, lines
        try:
            t.run(["true"])
            root = t.path()
            if host.transport.kind == "ssh":
                lines.append(Line(True, f"connected; host key verified against "
                                        f"{t.conn.endpoint.known_hosts}"))
            if host.transport.kind == "openssh":
                lines.append(Line(True, "a command ran through the master connection (host "
                                        "key checked by OpenSSH: StrictHostKeyChecking="
                                        f"{host.transport.strict_host_key_checking})"))
        except (HostError, TransientError, PermanentError) as exc:
            lines.append(Line(False, f"cannot connect: {exc}"))
            return title, lines
        res = t.run(["sh", "-c", _ROOT_SCRIPT, "check", root])
        out = res.stdout.splitlines()
        if res.returncode != 0 or not out:
            lines.append(Line(False, f"remote root {root} is not a writable folder: "
                                     f"{res.stderr.strip() or 'not writable'}"))
        else:
            if out[0] == "exists":
                lines.append(Line(True, f"remote root {root} exists and is writable"))
            else:
                lines.append(Line(True, f"remote root {root} does not exist yet; it can be "
                                        f"made ({out[0]} is writable)"))
            fields = (out[1] if len(out) > 1 else "").split()
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


def check_local(config) -> list[Line]:
    """This machine: what anyone could change, and the folders `caseflow run` will make."""
    from .config import permission_warnings
    from .folders import run_folders
    lines = [Line(False, w) for w in permission_warnings(config)]
    for key, folder in run_folders(config):
        if not folder.is_dir():
            lines.append(Line(True, f"{key}: {folder} does not exist yet; made by "
                                    "`caseflow run` at start"))
    return lines


def _master_up(t, host, lines: list[Line]) -> bool:
    """Is a master connection up? Without one (master: login) nothing more can be checked."""
    try:
        t.master.prepare_folder()
        pid = t.master.pid()
    except HostError as exc:
        lines.append(Line(False, str(exc)))
        return False
    where = t.master.socket_path()
    if pid is not None:
        lines.append(Line(True, f"master connection up (pid {pid}, {where})"))
        return True
    if host.transport.master == "daemon":
        lines.append(Line(True, f"no master connection yet at {where}; caseflow opens it"))
        return True
    lines.append(Line(False, f"no master connection at {where}: log in first with "
                             f"`caseflow login {host.name}`"))
    return False
