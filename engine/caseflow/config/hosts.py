"""The hosts of the configuration: each with its groups, its transport and its backend.

Either one host (top-level `groups`, `transport`, `backend`) or `hosts:`, a mapping of host
names to their own. Of a host's `transport:` and `backend:` this module reads the keys every
adapter has (`kind`, and `root`, `verify` / `command`); the rest of the mapping is read by the
adapter its `kind` names (see caseflow.plugins), with the same reader, so that its errors
name the file and the key like these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import backends, transports
from ..backends import BackendConfig
from ..plugins import PluginError
from ..settings import setting
from ..text import plural
from ..transports import TransportConfig
from .reader import Reader, Section, show

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # a group's or a host's


@dataclass(frozen=True)
class GroupConfig:
    name: str
    slots: int = setting(
        1,
        lambda v: None if v >= 1 else "must be at least 1 (remove the group to stop using it)",
        "how many of the group's cases the host runs at once",
    )
    devices: tuple[str, ...] | None = None

    def device_of(self, index: int) -> str | None:
        return self.devices[index] if self.devices else None


@dataclass(frozen=True)
class HostConfig:
    """One GPU host: how it is reached, its queue, and the slots of each group it serves."""

    name: str
    transport: TransportConfig
    backend: BackendConfig
    groups: tuple[GroupConfig, ...]

    def group(self, name: str) -> GroupConfig | None:
        for g in self.groups:
            if g.name == name:
                return g
        return None


def read_hosts(top: Reader, base: Path, state: Path) -> tuple[HostConfig, ...]:
    """Either one host (top-level groups, transport, backend) or `hosts:`, a mapping of host
    names to their own groups, transport and backend. `state`: the database's folder."""
    if "hosts" not in top.data:
        transport = read_transport(top, base, state)
        host = HostConfig(
            transport.name, transport, read_backend(top, base, state), read_groups(top)
        )
        _check_host(top, host)
        return (host,)
    for key in ("groups", "transport", "backend"):
        if key in top.data:
            raise top.error(key, "not allowed next to hosts: give each host its own")
    raw = top.get("hosts", dict, what="a mapping of host names to their settings")
    if not raw:
        raise top.error("hosts", "needs at least one host")
    hosts = []
    for name, settings in raw.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise top.error(
                "hosts",
                f"not a valid host name: {show(name)} "
                "(letters, digits, _ . - ; not starting with . or -)",
            )
        if not isinstance(settings, dict):
            raise top.error(
                f"hosts.{name}",
                f"expected a mapping with groups, transport and backend, got {show(settings)}",
            )
        hr = Reader(top.file, settings, prefix=f"{top.prefix}hosts.{name}.", planned=top.planned)
        transport = read_transport(hr, base, state, name=name)
        backend = read_backend(hr, base, state, name=name)
        groups = read_groups(hr)
        hr.finish()
        hosts.append(HostConfig(name, transport, backend, groups))
        _check_host(hr, hosts[-1])
    return tuple(hosts)


def read_groups(top: Reader) -> tuple[GroupConfig, ...]:
    raw = top.get(
        "groups",
        (dict, list),
        what="a mapping of group names to settings, or a list of group names",
    )
    if not raw:
        raise top.error("groups", "needs at least one group")
    groups = []
    if isinstance(raw, list):
        for i, name in enumerate(raw):
            if not isinstance(name, str) or not _NAME.match(name):
                raise top.error(f"groups[{i}]", f"not a valid group name: {show(name)}")
            groups.append(GroupConfig(name=name))
        return tuple(groups)
    for name, settings in raw.items():
        key = f"groups.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise top.error(
                "groups",
                f"not a valid group name: {show(name)} "
                "(letters, digits, _ . - ; not starting with . or -)",
            )
        if isinstance(settings, int) and not isinstance(settings, bool):
            settings = {"slots": settings}
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise top.error(
                f"groups.{name}", f"expected a mapping like {{slots: 2}}, got {show(settings)}"
            )
        gr = Reader(top.file, settings, prefix=f"{top.prefix}{key}.")
        slots = gr.setting(GroupConfig, "slots")
        devices = gr.get("devices", list, None, what="a list of device ids")
        gr.finish()
        if devices is not None:
            if len(devices) != slots:
                raise gr.error(
                    "devices",
                    f"has {plural(len(devices), 'entry', 'entries')} but slots is {slots}; "
                    'give one device id (or a list like "0,1") per slot',
                )
            for d in devices:
                if (
                    isinstance(d, bool)
                    or not isinstance(d, (int, str))
                    or not re.fullmatch(r"[0-9A-Za-z,:_-]+", str(d))
                ):
                    raise gr.error("devices", f"not a valid device id: {show(d)}")
            devices = tuple(str(d) for d in devices)
        groups.append(GroupConfig(name=name, slots=slots, devices=devices))
    return tuple(groups)


def _kind(reader: Reader, port: str, kinds: list[str]) -> str:
    return reader.get(
        "kind",
        str,
        check=lambda v: (
            None if v in kinds else f"unknown {port} {v!r}; choose one of {', '.join(kinds)}"
        ),
    )


def read_transport(
    top: Reader, base: Path, state: Path, name: str | None = None
) -> TransportConfig:
    """`name`: the host's name in a `hosts:` mapping (then transport.name may not differ)."""
    tr = top.sub("transport", required=True)
    if name is not None and tr.data.get("name", name) != name:
        raise tr.error(
            "name", f"the host is named {name!r} by its key in hosts; remove transport.name"
        )
    for secret in ("password", "passphrase"):
        if secret in tr.data:
            raise tr.error(
                secret,
                "passwords are not accepted in a config file; use a key "
                "(identity_file) or an ssh-agent",
            )
    kind = _kind(tr, "transport", transports.kinds())
    root = tr.get("root", str)
    verify = tr.setting(transports.TransportConfig, "verify")
    try:
        adapter = transports.adapter(kind)
    except PluginError as exc:
        raise tr.error("kind", f"transport {exc}") from exc
    section = Section(tr, dict(kind=kind, root=root, verify=verify), base, state, host=name)
    if adapter.read is None:
        cfg = adapter.config(**section.core, name=section.name(kind))
    else:
        cfg = adapter.read(section)
    tr.finish()
    return cfg


def read_backend(top: Reader, base: Path, state: Path, name: str | None = None) -> BackendConfig:
    br = top.sub("backend", required=True)
    kind = _kind(br, "backend", backends.kinds())
    command = br.get("command", (str, list), what="a shell command string or an argument list")
    if isinstance(command, list):
        if not command or not all(isinstance(c, str) for c in command):
            raise br.error("command", "an argument list must be a non-empty list of strings")
        command = tuple(command)
    elif not command.strip():
        raise br.error("command", "must not be empty")
    try:
        adapter = backends.adapter(kind)
    except PluginError as exc:
        raise br.error("kind", f"backend {exc}") from exc
    groups = top.data.get("groups")
    section = Section(
        br,
        dict(kind=kind, command=command),
        base,
        state,
        host=name,
        groups=tuple(groups) if isinstance(groups, (dict, list)) else (),
    )
    cfg = adapter.config(**section.core) if adapter.read is None else adapter.read(section)
    br.finish()
    return cfg


def _check_host(reader: Reader, host: HostConfig) -> None:
    """What the host's backend says of the host's other settings (e.g. Slurm of devices)."""
    check = backends.adapter(host.backend.kind).check_host
    if check is not None:
        check(reader, host)
