"""Reads and checks the YAML configuration.

Every mistake is reported as a `ConfigError` that names the file and the key.
Loading changes nothing on disk: a folder that `caseflow run` will need (the
database's, results, archives, a local transport's root) may be missing if it can
be made; `folders.make_run_folders` makes them, once the daemon is sure to run. Relative
paths are resolved against the config file's folder, so the daemon works from any
working directory.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import yamlfile
from .errors import ConfigError

ENV_VAR = "CASEFLOW_CONFIG"
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
TRANSPORT_KINDS = ("local", "ssh")
VERIFY_MODES = ("size", "checksum")
BACKEND_KINDS = ("direct", "pueue", "slurm")
CLEANUP_MODES = ("never", "on_success", "always")


@dataclass(frozen=True)
class GroupConfig:
    name: str
    slots: int
    devices: tuple[str, ...] | None = None

    def device_of(self, index: int) -> str | None:
        return self.devices[index] if self.devices else None


@dataclass(frozen=True)
class TransportConfig:
    kind: str
    root: str
    name: str
    verify: str = "size"
    # ssh only
    host: str | None = None
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    accept_new_host_keys: bool = False
    ssh_config: str | None = None
    connect_timeout: float = 15.0
    command_timeout: float = 600.0
    keepalive_seconds: float = 30.0
    reconnect_min_interval: float = 5.0
    large_file_bytes: int = 64 * 1024 * 1024
    # channels an upload opens at once on the connection (byte ranges, tar streams), all
    # uploads together: OpenSSH's MaxSessions (10) minus what polls and submits need
    max_channels: int = 8


@dataclass(frozen=True)
class SlurmOptions:
    """What `sbatch` is told for the jobs of one group (backend kind `slurm`)."""
    gpus_per_job: int = 1                 # --gres=gpu:N (0: no GPU requested)
    partition: str | None = None          # --partition
    account: str | None = None            # --account
    time: str | None = None               # --time (Slurm's formats: "30", "4:00:00", "1-0")
    extra_args: tuple[str, ...] = ()      # more sbatch options, as given

    def sbatch_args(self) -> list[str]:
        args = [f"--gres=gpu:{self.gpus_per_job}"] if self.gpus_per_job else []
        for option, value in (("partition", self.partition), ("account", self.account),
                              ("time", self.time)):
            if value is not None:
                args.append(f"--{option}={value}")
        return args + list(self.extra_args)


@dataclass(frozen=True)
class BackendConfig:
    kind: str
    command: tuple[str, ...] | str
    pueue: str = "pueue"          # the pueue client on the host
    manage_groups: bool = True    # create the groups and set their parallel tasks to the slots
    # slurm only: the options of every group, and of the groups that override some of them
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    slurm_groups: tuple[tuple[str, SlurmOptions], ...] = ()

    def slurm_options(self, group: str) -> SlurmOptions:
        return dict(self.slurm_groups).get(group, self.slurm)


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


@dataclass(frozen=True)
class RetryConfig:
    initial_seconds: float = 5.0
    max_seconds: float = 300.0
    give_up_after_seconds: float = 24 * 3600.0

    def delay(self, attempts: int) -> float:
        """Backoff before attempt number `attempts + 1` (exponential, capped)."""
        return min(self.max_seconds, self.initial_seconds * (2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class ResultsConfig:
    """What comes home when a job ends, and where it goes."""
    folder: Path | None                    # None: results are not fetched (the job log is)
    patterns: tuple[str, ...] | None = None  # None: every file the job created or changed


@dataclass(frozen=True)
class FinishConfig:
    """What happens after a case reached its terminal state."""
    archive_done: Path | None = None      # success goes here
    archive_failed: Path | None = None    # failure and not_found go here
    remote_cleanup: str = "never"
    on_finish: tuple[str, ...] | str | None = None
    on_finish_timeout_seconds: float = 300.0


@dataclass(frozen=True)
class WebConfig:
    """The status page and /metrics (`web:`); None in Config when the key is absent."""
    host: str                      # the address to listen on, loopback unless configured
    port: int                      # 0: any free port (the log says which)
    token_file: Path | None = None  # a bearer token is required when set (always off loopback)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    import ipaddress
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Config:
    path: Path
    inbox: Path
    database: Path
    hosts: tuple[HostConfig, ...]
    quiet_seconds: float = 5.0
    rescan_seconds: float = 30.0
    tick_seconds: float = 2.0
    poll_seconds: float = 10.0
    workers: int = 4
    shutdown_grace_seconds: float = 30.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    log_level: str = "INFO"
    log_file: Path | None = None
    results: ResultsConfig = field(default_factory=lambda: ResultsConfig(folder=None))
    finish: FinishConfig = field(default_factory=FinishConfig)
    web: WebConfig | None = None

    @property
    def groups(self) -> tuple[GroupConfig, ...]:
        """Every group served by some host, in config order; slots summed over the hosts."""
        out: dict[str, GroupConfig] = {}
        for h in self.hosts:
            for g in h.groups:
                seen = out.get(g.name)
                out[g.name] = g if seen is None else GroupConfig(g.name, seen.slots + g.slots)
        return tuple(out.values())

    @property
    def default_group(self) -> str:
        return self.hosts[0].groups[0].name

    def group(self, name: str) -> GroupConfig | None:
        for g in self.groups:
            if g.name == name:
                return g
        return None

    def host(self, name: str | None) -> HostConfig | None:
        for h in self.hosts:
            if h.name == name:
                return h
        return None

    def hosts_serving(self, group: str) -> list[HostConfig]:
        return [h for h in self.hosts if h.group(group) is not None]

    # the first host's ports (the only host of a single-host config)
    @property
    def transport(self) -> TransportConfig:
        return self.hosts[0].transport

    @property
    def backend(self) -> BackendConfig:
        return self.hosts[0].backend


class _Reader:
    """Takes values out of one mapping, naming file and key in every error."""

    def __init__(self, file: Path, data: dict, prefix: str = "",
                 planned: set[Path] | None = None):
        self.file = file
        self.data = data
        self.prefix = prefix
        self.used: set[str] = set()
        # folders that do not exist yet and that `caseflow run` will make (shared by the
        # readers of one file: a folder may be missing if its parent exists or is one)
        self.planned: set[Path] = set() if planned is None else planned

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key(name)}: {message}")

    def get(self, name: str, kind, default: Any = ..., check=None, what: str | None = None):
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            if default is ...:
                self._misspelt(name)
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            raise self.error(name, f"expected {what or _kind_name(kinds)}, got {_show(value)}")
        if check is not None:
            message = check(value)
            if message:
                raise self.error(name, message)
        return value

    def sub(self, name: str, required: bool = False) -> "_Reader":
        value = self.get(name, dict, default=... if required else {}, what="a mapping")
        return _Reader(self.file, value, prefix=f"{self.key(name)}.", planned=self.planned)

    def _misspelt(self, name: str) -> None:
        """A required key is missing: a key not read yet that looks like it (`kidn` for
        `kind`) is the mistake to name, not the missing key."""
        others = [str(k) for k in self.data if k not in self.used]
        close = difflib.get_close_matches(name, others, n=1, cutoff=0.7)
        if close:
            raise self.error(close[0], f"unknown key (did you mean {name!r}? "
                                       f"{self.key(name)} is required)")

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            k = unknown[0]
            known = sorted(self.used)
            close = [c for c in known if str(k) in c or c in str(k)] or \
                difflib.get_close_matches(str(k), known, n=1, cutoff=0.5)
            hint = (f" (did you mean {close[0]!r}?)" if close else
                    f" (known keys: {', '.join(known)})")
            raise self.error(str(k), f"unknown key{hint}")


def _kind_name(kinds) -> str:
    if set(kinds) == {int, float}:
        return "a number"
    names = {int: "a whole number", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _show(value) -> str:
    return f"{type(value).__name__} {value!r}"


def _positive(value):
    return None if value > 0 else "must be greater than 0"


def _not_negative(value):
    return None if value >= 0 else "must not be negative"


def _resolve(base: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p).resolve()


def permission_warnings(config: "Config") -> list[str]:
    """What anyone on this machine could change: a config that says which commands run,
    a database folder where the database (and its lock) could be replaced."""
    out = []
    checks = [(config.path, "the configuration", "chmod o-w"),
              (config.path.parent, "the configuration's folder", "chmod o-w"),
              (config.database.parent, "the database's folder", "chmod o-w")]
    for path, what, fix in checks:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o002:
            out.append(f"{what} {path} is writable by every user of this machine: anyone could "
                       f"change what caseflow runs or records ({fix} {path})")
    token = config.web.token_file if config.web else None
    if token is not None and token.exists() and token.stat().st_mode & 0o004:
        out.append(f"the status page's token file {token} is readable by every user of this "
                   f"machine (chmod o-r {token})")
    return out


def config_path_from(arg: str | None) -> Path:
    value = arg or os.environ.get(ENV_VAR)
    if not value:
        raise ConfigError(f"no configuration: pass -c/--config FILE or set {ENV_VAR}")
    return Path(value)


def load_config(path: Path | str) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): is it the "
                          "configuration?") from exc
    try:
        data = yamlfile.load(text, name=str(path))
    except yamlfile.DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top")
    base = path.resolve().parent
    top = _Reader(path, data)
    # top-level keys starting with "x-" are the user's own (e.g. YAML anchors to share)
    top.used |= {k for k in data if isinstance(k, str) and k.startswith("x-")}

    inbox = _resolve(base, top.get("inbox", str))
    if inbox.exists() and not inbox.is_dir():
        raise top.error("inbox", f"{inbox} is a file, not a folder (each case is a folder in "
                                 "the inbox: give the folder that holds them)")
    if not inbox.is_dir():
        raise top.error("inbox", f"folder {inbox} does not exist (create it, or fix the path)")
    database = _resolve(base, top.get("database", str, default="caseflow.db"))
    if database.is_dir():
        raise top.error("database", f"{database} is a folder; give the database's file name "
                                    f"(e.g. {database / 'caseflow.db'})")
    _can_make(top, "database", database.parent)
    number = (int, float)
    tick = float(top.get("tick_seconds", number, 2.0, _positive))
    poll = float(top.get("poll_seconds", number, 10.0, _positive))
    workers = top.get("workers", int, 4, _positive)
    grace = float(top.get("shutdown_grace_seconds", number, 30.0, _not_negative))

    stab = top.sub("stability")
    quiet = float(stab.get("quiet_seconds", number, 5.0, _not_negative))
    rescan = float(stab.get("rescan_seconds", number, 30.0, _positive))
    stab.finish()

    hosts = _read_hosts(top, base)

    rr = top.sub("retry")
    retry = RetryConfig(
        initial_seconds=float(rr.get("initial_seconds", number, 5.0, _positive)),
        max_seconds=float(rr.get("max_seconds", number, 300.0, _positive)),
        give_up_after_seconds=float(rr.get("give_up_after_seconds", number, 86400.0,
                                           _positive)))
    rr.finish()

    results = _read_results(top, base, inbox)
    finish = _read_finish(top, base, inbox)
    if finish.remote_cleanup != "never" and results.folder is None:
        raise top.error("remote_cleanup", "removes remote case folders only after their results "
                                          "are home, but results.fetch is false; set it to never")

    web = _read_web(top, base)

    lg = top.sub("log")
    level = lg.get("level", str, "INFO",
                   lambda v: None if v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR")
                   else "must be one of DEBUG, INFO, WARNING, ERROR").upper()
    log_file = lg.get("file", str, None)
    if log_file is not None:
        log_path = _resolve(base, log_file)
        if log_path.is_dir():
            raise lg.error("file", f"{log_path} is a folder; give the log's file name")
        if not log_path.parent.is_dir():
            raise lg.error("file", f"folder {log_path.parent} does not exist")
    lg.finish()
    top.finish()
    return Config(path=path.resolve(), inbox=inbox, database=database, hosts=hosts,
                  quiet_seconds=quiet,
                  rescan_seconds=rescan, tick_seconds=tick, poll_seconds=poll, workers=workers,
                  shutdown_grace_seconds=grace, retry=retry, log_level=level,
                  log_file=_resolve(base, log_file) if log_file else None,
                  results=results, finish=finish, web=web)


def _read_web(top: _Reader, base: Path) -> WebConfig | None:
    """`web: {listen: 127.0.0.1:8765, token_file: ...}`: the status page, off when absent."""
    if top.data.get("web") is None:
        top.used.add("web")
        return None
    wr = top.sub("web")
    listen = wr.get("listen", str, what='an address and port such as "127.0.0.1:8765"')
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise wr.error("listen", f'expected an address and port such as "127.0.0.1:8765" or '
                                 f'"[::1]:8765", got {listen!r}')
    token = wr.get("token_file", str, None)
    token_file = _resolve(base, token) if token else None
    wr.finish()
    if token_file is None and not is_loopback(host):
        raise wr.error("token_file", f"is required when listen is not a loopback address "
                                     f"({host}): the page and /metrics then need a bearer "
                                     "token read from this file")
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise wr.error("token_file", f"cannot read {token_file}: "
                                         f"{getattr(exc, 'strerror', None) or exc}") from exc
        if not re.fullmatch(r"[A-Za-z0-9._~+/=-]{16,}", text):  # also a valid cookie value
            raise wr.error("token_file", f"{token_file} must hold one token of at least 16 "
                                         "letters, digits or -._~+/= (e.g. `openssl rand -hex "
                                         "32`)")
    return WebConfig(host=host, port=int(port), token_file=token_file)


def _outside_inbox(reader: _Reader, key: str, folder: Path, inbox: Path) -> None:
    if folder == inbox or inbox in folder.parents:
        raise reader.error(key, f"{folder} is inside the inbox, where it would be taken for a "
                                "case; choose a folder next to the inbox")


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _can_make(reader: _Reader, key: str, folder: Path) -> None:
    """`folder` is a folder, or `caseflow run` can make it: its parent exists (a typo in a
    path is not taken for a folder to make) or is another folder run makes first (the
    database's `var/` for a local root `var/remote`)."""
    if folder.is_dir():
        return
    if folder.exists():
        raise reader.error(key, f"{folder} is a file, not a folder")
    parent = _existing_ancestor(folder)
    if not parent.is_dir():
        raise reader.error(key, f"cannot make {folder}: {parent} is a file, not a folder")
    if folder.parent != parent and folder.parent not in reader.planned:
        raise reader.error(key, f"folder {folder.parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise reader.error(key, f"cannot make {folder}: {parent} is not writable")
    reader.planned.add(folder)


def _folder(reader: _Reader, key: str, base: Path, default: str | None = None) -> Path | None:
    """A local folder setting: it exists, or `caseflow run` can make it."""
    value = reader.get(key, str, default)
    if value is None:
        return None
    folder = _resolve(base, value)
    _can_make(reader, key, folder)
    return folder


def _read_results(top: _Reader, base: Path, inbox: Path) -> ResultsConfig:
    rs = top.sub("results")
    fetch = rs.get("fetch", bool, True)
    # default: a "results" folder next to the inbox
    folder = _folder(rs, "folder", base if "folder" in rs.data else inbox.parent,
                     "results") if fetch else None
    if folder is not None:
        _outside_inbox(rs, "folder", folder, inbox)
    patterns = rs.get("patterns", list, None, what="a list of patterns such as \"out/*\"")
    if patterns is not None:
        for p in patterns:
            if not isinstance(p, str) or not p.strip() or p.startswith("/") or \
                    ".." in p.split("/"):
                raise rs.error("patterns", f"not a pattern inside the case folder: {_show(p)}")
        patterns = tuple(patterns)
    rs.finish()
    return ResultsConfig(folder=folder, patterns=patterns)


def _read_finish(top: _Reader, base: Path, inbox: Path) -> FinishConfig:
    ar = top.sub("archive")
    done = _folder(ar, "done", base)
    failed = _folder(ar, "failed", base)
    ar.finish()
    inbox_dev = os.stat(inbox).st_dev
    for key, folder in (("done", done), ("failed", failed)):
        if folder is None:
            continue
        _outside_inbox(ar, key, folder, inbox)
        # a folder still to be made will be on the file system of its nearest ancestor
        if os.stat(_existing_ancestor(folder)).st_dev != inbox_dev:
            raise ar.error(key, f"{folder} is on another file system than the inbox; "
                                "archiving moves folders by renaming, so it must be on the same")
    cleanup = top.get("remote_cleanup", str, "never",
                      lambda v: None if v in CLEANUP_MODES
                      else f"must be one of {', '.join(CLEANUP_MODES)}")
    hook = top.get("on_finish", (str, list), None,
                   what="a shell command string or an argument list")
    if isinstance(hook, list):
        if not hook or not all(isinstance(c, str) for c in hook):
            raise top.error("on_finish", "an argument list must be a non-empty list of strings")
        hook = tuple(hook)
    elif isinstance(hook, str) and not hook.strip():
        raise top.error("on_finish", "must not be empty (remove the key to run no hook)")
    timeout = float(top.get("on_finish_timeout_seconds", (int, float), 300.0, _positive))
    return FinishConfig(archive_done=done, archive_failed=failed, remote_cleanup=cleanup,
                        on_finish=hook, on_finish_timeout_seconds=timeout)


def _read_hosts(top: _Reader, base: Path) -> tuple[HostConfig, ...]:
    """Either one host (top-level groups, transport, backend) or `hosts:`, a mapping of host
    names to their own groups, transport and backend."""
    if "hosts" not in top.data:
        transport = _read_transport(top, base)
        host = HostConfig(transport.name, transport, _read_backend(top), _read_groups(top))
        _check_devices(top, host)
        return (host,)
    for key in ("groups", "transport", "backend"):
        if key in top.data:
            raise top.error(key, "not allowed next to hosts: give each host its own")
    raw = top.get("hosts", dict, what="a mapping of host names to their settings")
    if not raw:
        raise top.error("hosts", "needs at least one host")
    hosts = []
    for name, settings in raw.items():
        if not isinstance(name, str) or not _GROUP_NAME.match(name):
            raise top.error("hosts", f"not a valid host name: {_show(name)} "
                                     "(letters, digits, _ . - ; not starting with . or -)")
        if not isinstance(settings, dict):
            raise top.error(f"hosts.{name}", f"expected a mapping with groups, transport and "
                                             f"backend, got {_show(settings)}")
        hr = _Reader(top.file, settings, prefix=f"{top.prefix}hosts.{name}.",
                     planned=top.planned)
        transport = _read_transport(hr, base, name=name)
        backend = _read_backend(hr)
        groups = _read_groups(hr)
        hr.finish()
        hosts.append(HostConfig(name, transport, backend, groups))
        _check_devices(hr, hosts[-1])
    return tuple(hosts)


def _check_devices(reader: _Reader, host: HostConfig) -> None:
    """Slurm chooses the GPUs of a job itself (and sets CUDA_VISIBLE_DEVICES)."""
    if host.backend.kind != "slurm":
        return
    for g in host.groups:
        if g.devices:
            raise reader.error(f"groups.{g.name}.devices",
                               "not used with the slurm backend: Slurm picks the GPUs and sets "
                               "CUDA_VISIBLE_DEVICES (use backend.gpus_per_job); remove devices")


def _read_groups(top: _Reader) -> tuple[GroupConfig, ...]:
    raw = top.get("groups", (dict, list), what="a mapping of group names to settings, "
                                                "or a list of group names")
    if not raw:
        raise top.error("groups", "needs at least one group")
    groups = []
    if isinstance(raw, list):
        for i, name in enumerate(raw):
            if not isinstance(name, str) or not _GROUP_NAME.match(name):
                raise top.error(f"groups[{i}]", f"not a valid group name: {_show(name)}")
            groups.append(GroupConfig(name=name, slots=1))
    else:
        for name, settings in raw.items():
            key = f"groups.{name}"
            if not isinstance(name, str) or not _GROUP_NAME.match(name):
                raise top.error("groups", f"not a valid group name: {_show(name)} "
                                          "(letters, digits, _ . - ; not starting with . or -)")
            if isinstance(settings, int) and not isinstance(settings, bool):
                settings = {"slots": settings}
            if settings is None:
                settings = {}
            if not isinstance(settings, dict):
                raise top.error(f"groups.{name}",
                                f"expected a mapping like {{slots: 2}}, got {_show(settings)}")
            gr = _Reader(top.file, settings, prefix=f"{top.prefix}{key}.")
            slots = gr.get("slots", int, 1, lambda v: None if v >= 1 else
                           "must be at least 1 (remove the group to stop using it)")
            devices = gr.get("devices", list, None, what="a list of device ids")
            gr.finish()
            if devices is not None:
                if len(devices) != slots:
                    raise gr.error("devices", f"has {len(devices)} entries but slots is {slots}; "
                                              "give one device id (or a list like \"0,1\") per slot")
                for d in devices:
                    if isinstance(d, bool) or not isinstance(d, (int, str)) or \
                            not re.fullmatch(r"[0-9A-Za-z,:_-]+", str(d)):
                        raise gr.error("devices", f"not a valid device id: {_show(d)}")
                devices = tuple(str(d) for d in devices)
            groups.append(GroupConfig(name=name, slots=slots, devices=devices))
    return tuple(groups)


def _read_transport(top: _Reader, base: Path, name: str | None = None) -> TransportConfig:
    """`name`: the host's name in a `hosts:` mapping (then transport.name may not differ)."""
    tr = top.sub("transport", required=True)
    if name is not None and tr.data.get("name", name) != name:
        raise tr.error("name", f"the host is named {name!r} by its key in hosts; "
                               "remove transport.name")
    for secret in ("password", "passphrase"):
        if secret in tr.data:
            raise tr.error(secret, "passwords are not accepted in a config file; use a key "
                                   "(identity_file) or an ssh-agent")
    kind = tr.get("kind", str, check=lambda v: None if v in TRANSPORT_KINDS
                  else f"unknown transport {v!r}; choose one of {', '.join(TRANSPORT_KINDS)}")
    root = tr.get("root", str)
    verify = tr.get("verify", str, "size", lambda v: None if v in VERIFY_MODES
                    else f"must be one of {', '.join(VERIFY_MODES)}")
    if kind == "local":
        name = tr.get("name", str, name or "local")
        tr.finish()
        root_path = _resolve(base, root)
        _can_make(tr, "root", root_path)
        return TransportConfig(kind=kind, root=str(root_path), name=name, verify=verify)
    number = (int, float)
    host = tr.get("host", str)
    if not root.startswith("/") and not root.startswith("~"):
        raise tr.error("root", "must be an absolute path on the remote host (or start with ~/)")
    port = tr.get("port", int, None, lambda v: None if 0 < v < 65536 else "not a port number")
    user = tr.get("user", str, None)
    name = tr.get("name", str, name or host)
    identity = tr.get("identity_file", str, None)
    known_hosts = tr.get("known_hosts", str, None)
    ssh_config = tr.get("ssh_config", str, None)
    accept_new = tr.get("accept_new_host_keys", bool, False)
    cfg = TransportConfig(
        kind=kind, root=root, name=name, verify=verify, host=host, port=port, user=user,
        identity_file=str(_resolve(base, identity)) if identity else None,
        known_hosts=str(_resolve(base, known_hosts)) if known_hosts else None,
        ssh_config=str(_resolve(base, ssh_config)) if ssh_config else None,
        accept_new_host_keys=accept_new,
        connect_timeout=float(tr.get("connect_timeout", number, 15.0, _positive)),
        command_timeout=float(tr.get("command_timeout", number, 600.0, _positive)),
        keepalive_seconds=float(tr.get("keepalive_seconds", number, 30.0, _not_negative)),
        reconnect_min_interval=float(tr.get("reconnect_min_interval", number, 5.0,
                                            _not_negative)),
        large_file_bytes=tr.get("large_file_bytes", int, 64 * 1024 * 1024, _positive),
        max_channels=tr.get("max_channels", int, 8, _positive))
    tr.finish()
    for key, path in (("identity_file", cfg.identity_file), ("ssh_config", cfg.ssh_config)):
        if path and not Path(path).is_file():
            raise tr.error(key, f"file {path} does not exist")
    return cfg


def _read_backend(top: _Reader) -> BackendConfig:
    br = top.sub("backend", required=True)
    kind = br.get("kind", str, check=lambda v: None if v in BACKEND_KINDS
                  else f"unknown backend {v!r}; choose one of {', '.join(BACKEND_KINDS)}")
    command = br.get("command", (str, list), what="a shell command string or an argument list")
    if isinstance(command, list):
        if not command or not all(isinstance(c, str) for c in command):
            raise br.error("command", "an argument list must be a non-empty list of strings")
        command = tuple(command)
    elif not command.strip():
        raise br.error("command", "must not be empty")
    extra = {}
    if kind == "pueue":
        extra["pueue"] = br.get("pueue", str, "pueue")
        extra["manage_groups"] = br.get("manage_groups", bool, True)
    if kind == "slurm":
        extra["slurm"] = _read_slurm_options(br, SlurmOptions())
        raw = br.get("groups", dict, {}, what="a mapping of group names to sbatch settings")
        groups = top.data.get("groups")
        known = list(groups) if isinstance(groups, (dict, list)) else []
        overrides = []
        for name, settings in raw.items():
            if name not in known:
                raise br.error(f"groups.{name}", f"not a configured group (configured: "
                                                 f"{', '.join(map(str, known)) or 'none'})")
            if not isinstance(settings, dict):
                raise br.error(f"groups.{name}", f"expected a mapping like {{gpus_per_job: 2}}, "
                                                 f"got {_show(settings)}")
            gr = _Reader(br.file, settings, prefix=f"{br.prefix}groups.{name}.")
            overrides.append((name, _read_slurm_options(gr, extra["slurm"])))
            gr.finish()
        extra["slurm_groups"] = tuple(overrides)
    br.finish()
    return BackendConfig(kind=kind, command=command, **extra)


# Slurm's --time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds; or no limit.
_SLURM_TIME = re.compile(r"^(\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}|UNLIMITED|INFINITE)$")
# sbatch options caseflow sets itself: the job's name, folder, output and script
_SLURM_OWN = ("-J", "--job-name", "-D", "--chdir", "-o", "--output", "-e", "--error",
              "--wrap", "-a", "--array", "--parsable")


def _read_slurm_options(reader: _Reader, base: "SlurmOptions") -> "SlurmOptions":
    """The sbatch settings in `reader` (the backend, or one group of it); unset keys from
    `base` (a group's keys replace the backend's, `extra_args` as a whole)."""
    def word(value):
        return None if value.strip() and not re.search(r"\s", value) else \
            "must be a non-empty word without spaces"
    gpus = reader.get("gpus_per_job", int, base.gpus_per_job, _not_negative)
    partition = reader.get("partition", str, base.partition, word)
    account = reader.get("account", str, base.account, word)
    # a string only: YAML reads an unquoted 4:00:00 as the number 14400 (base 60)
    time_limit = reader.get("time", str, base.time, what="a quoted Slurm time limit such as "
                            "\"4:00:00\" or \"1-12:00:00\" (unquoted, YAML reads 4:00:00 "
                            "as a number)",
                            check=lambda v: None if _SLURM_TIME.match(v) else
                            "not a Slurm time limit (\"MINUTES\", \"H:MM:SS\", "
                            "\"D-HH:MM:SS\", or \"UNLIMITED\")")
    extra = reader.get("extra_args", list, None, what="a list of sbatch options such as "
                                                      "[\"--qos=normal\", \"--mem=16G\"]")
    if extra is None:
        extra = base.extra_args
    else:
        for arg in extra:
            if not isinstance(arg, str) or not arg.startswith("-") or "\n" in arg:
                raise reader.error("extra_args", f"not an sbatch option: {_show(arg)} (give "
                                                 "each option as one entry: \"--qos=normal\")")
            option = arg.split("=", 1)[0]
            if option in _SLURM_OWN or (option[:2] in ("-J", "-D", "-o", "-e", "-a") and
                                        not option.startswith("--")):
                raise reader.error("extra_args", f"{arg!r}: caseflow sets the job's name, "
                                                 "folder, output and script itself")
        extra = tuple(extra)
    return SlurmOptions(gpus_per_job=gpus, partition=partition, account=account,
                        time=time_limit, extra_args=extra)
