"""The settings of the two transports that reach a host over SSH, and how they are read.

`kind: ssh` (paramiko, transports/ssh.py) and `kind: openssh` (the system `ssh` through one
master connection, transports/openssh.py) share the connection's settings; openssh adds
those of its master. Passwords are never accepted: keys, an agent, or (openssh) whatever a
person types at `caseflow login`.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.reader import Check, Reader, Section, port_number
from ..settings import not_negative, positive, setting
from . import TransportConfig


@dataclass(frozen=True, kw_only=True)
class SSHConfig(TransportConfig):
    """`kind: ssh`. `host` may be an alias of the OpenSSH client config (`ssh_config`)."""

    host: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    accept_new_host_keys: bool = False
    ssh_config: str | None = None
    connect_timeout: float = setting(15.0, positive, "seconds for connecting and authenticating")
    command_timeout: float = setting(
        600.0, positive, "seconds a remote command (or an upload's silence) may take"
    )
    keepalive_seconds: float = setting(
        30.0, not_negative, "SSH keepalive interval of the one long-lived connection"
    )
    reconnect_min_interval: float = setting(
        5.0, not_negative, "after a failed connection attempt, no new one before this many seconds"
    )
    large_file_bytes: int = setting(
        64 * 1024 * 1024,
        positive,
        "files at least this large go as byte ranges on several channels at once",
    )
    # channels open at once on the connection, everything together (the server's
    # MaxSessions, 10 by default in OpenSSH, counts the sessions of one connection)
    max_sessions: int = 10
    # of those, the ones uploads keep open at once (byte ranges, tar streams), all uploads
    # together: max_sessions minus two, so polls and submits always find a session
    max_channels: int = 8


OPENSSH_MASTERS = ("login", "daemon")
OPENSSH_HOST_KEY_CHECKS = ("yes", "accept-new", "ask")


@dataclass(frozen=True, kw_only=True)
class OpenSSHConfig(SSHConfig):
    """`kind: openssh`: the connection's settings, and those of its master connection."""

    control_path: str | None = None  # None: one under the state folder (see below)
    control_persist: str = "12h"  # the master's idle time before it closes
    strict_host_key_checking: str = "yes"
    master: str = "login"  # who opens the master: a person, or the daemon


def _remote_root(section: Section) -> None:
    if not section.core["root"].startswith(("/", "~")):
        raise section.reader.error(
            "root", "must be an absolute path on the remote host (or start with ~/)"
        )


def _limits(tr: Reader) -> dict[str, Any]:
    """The timeouts and sizes both transports have."""
    return dict(
        **tr.settings(
            SSHConfig,
            "connect_timeout",
            "command_timeout",
            "keepalive_seconds",
            "reconnect_min_interval",
            "large_file_bytes",
        ),
        **_sessions(tr),
    )


def _sessions(tr: Reader) -> dict[str, int]:
    """max_sessions, and max_channels below it: an upload that holds channels may still need
    a command (a check, the rename), so the uploads may not take every session."""
    d = SSHConfig
    sessions = tr.get(
        "max_sessions",
        int,
        d.max_sessions,
        lambda v: None if v >= 2 else "must be at least 2 (an upload's channel and a command)",
    )
    default = max(1, min(d.max_channels, sessions - 2))
    channels = tr.get(
        "max_channels",
        int,
        default,
        lambda v: (
            "must be greater than 0"
            if v < 1
            else None
            if v < sessions
            else f"must be less than max_sessions ({sessions}): commands need a session too"
        ),
    )
    return {"max_sessions": sessions, "max_channels": channels}


def _files_exist(tr: Reader, cfg: SSHConfig) -> None:
    for key, path in (("identity_file", cfg.identity_file), ("ssh_config", cfg.ssh_config)):
        if path and not Path(path).is_file():
            raise tr.error(key, f"file {path} does not exist")


def read_ssh(section: Section) -> SSHConfig:
    tr = section.reader
    host = tr.get("host", str)
    _remote_root(section)
    port = tr.get("port", int, None, port_number)
    user = tr.get("user", str, None)
    name = section.name(host)
    paths: dict[str, Any] = {
        key: (str(section.path(value)) if value else None)
        for key, value in (
            (k, tr.get(k, str, None)) for k in ("identity_file", "known_hosts", "ssh_config")
        )
    }
    accept_new = tr.get("accept_new_host_keys", bool, False)
    cfg = SSHConfig(
        **section.core,
        name=name,
        host=host,
        port=port,
        user=user,
        **paths,
        accept_new_host_keys=accept_new,
        **_limits(tr),
    )
    tr.finish()
    _files_exist(tr, cfg)
    return cfg


# ControlPersist: "yes" (no idle limit) or an OpenSSH time such as 30m, 12h, 1h30m
_OPENSSH_TIME = re.compile(r"^(yes|(\d+[sSmMhHdDwW]?)+)$")


def read_openssh(section: Section) -> OpenSSHConfig:
    """The `openssh` transport: the system `ssh` through one master connection per host.
    `host` may be an alias of the OpenSSH client config, which then applies as a whole."""
    tr, d = section.reader, OpenSSHConfig
    host = tr.get(
        "host",
        str,
        check=lambda v: (
            None
            if v.strip() and not v.startswith("-") and not re.search(r"\s", v)
            else "must be a host name or ssh config alias (no spaces, not starting with -)"
        ),
    )
    _remote_root(section)
    if "accept_new_host_keys" in tr.data:
        raise tr.error(
            "accept_new_host_keys",
            "not used by the openssh transport; set "
            "strict_host_key_checking: accept-new to trust a new host key",
        )
    paths: dict[str, Any] = {}
    for key in ("identity_file", "known_hosts", "ssh_config"):
        value = tr.get(key, str, None)
        paths[key] = str(section.path(value)) if value else None
    control_path = tr.get(
        "control_path",
        str,
        None,
        lambda v: (
            None if v.strip() and '"' not in v else "must be a path (OpenSSH's %-tokens allowed)"
        ),
    )
    name = section.name(host)
    cfg = OpenSSHConfig(
        **section.core,
        name=name,
        host=host,
        port=tr.get("port", int, None, port_number),
        user=tr.get("user", str, None),
        **paths,
        **_limits(tr),
        control_path=(
            os.path.expanduser(control_path)
            if control_path
            else control_socket(section.state, name)
        ),
        control_persist=_yes_or_text(
            tr,
            "control_persist",
            d.control_persist,
            lambda v: (
                None
                if _OPENSSH_TIME.match(v)
                else "must be yes or a time such as 30m, 12h or 1h30m (OpenSSH's ControlPersist)"
            ),
        ),
        strict_host_key_checking=_yes_or_text(
            tr,
            "strict_host_key_checking",
            d.strict_host_key_checking,
            lambda v: (
                None
                if v in OPENSSH_HOST_KEY_CHECKS
                else f"must be one of {', '.join(OPENSSH_HOST_KEY_CHECKS)}"
                " (not no: a changed host key must stop caseflow)"
            ),
        ),
        master=tr.get(
            "master",
            str,
            d.master,
            lambda v: (
                None
                if v in OPENSSH_MASTERS
                else "must be login (a person opens it: caseflow login HOST) or daemon "
                "(caseflow opens it itself, without prompts)"
            ),
        ),
    )
    tr.finish()
    _files_exist(tr, cfg)
    return cfg


# A unix socket's path holds at most 107 bytes, and OpenSSH first binds "<path>.<16 random
# characters>" and renames it: a control path may have at most 90.
CONTROL_PATH_MAX = 90


def control_socket(state: Path, host: str) -> str:
    """The control socket of an openssh host without a control_path, one caseflow owns: in
    the state folder (the database's), named by a digest of the folder and the host (OpenSSH's
    %C is 40 characters: too long for most paths); in the user's runtime folder when that
    path would be too long for a unix socket."""
    digest = hashlib.sha256(f"{state}\0{host}".encode()).hexdigest()[:12]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folders = [
        state / "ssh",
        *([Path(runtime) / "caseflow"] if runtime else []),
        Path("/tmp") / f"caseflow-{os.getuid()}",
    ]
    path = next(
        (
            f / f"cm-{digest}"
            for f in folders
            if len(os.fsencode(f / f"cm-{digest}")) <= CONTROL_PATH_MAX
        ),
        folders[-1] / f"cm-{digest}",
    )
    return str(path).replace("%", "%%")  # a literal path: OpenSSH would read a % as a token


def _yes_or_text(reader: Reader, key: str, default: str, check: Check) -> str:
    """A setting in OpenSSH's words; YAML reads an unquoted yes/no as true/false."""
    value = reader.get(key, (str, bool, int), default, what="a string")
    text = ("yes" if value else "no") if isinstance(value, bool) else str(value)
    message = check(text)
    if message:
        raise reader.error(key, message)
    return text
