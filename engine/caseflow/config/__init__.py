"""Reads and checks the YAML configuration.

Every mistake is reported as a `ConfigError` that names the file and the key.
Loading changes nothing on disk: a folder that `caseflow run` will need (the
database's, results, archives, a local transport's root) may be missing if it can
be made; `folders.make_run_folders` makes them, once the daemon is sure to run. Relative
paths are resolved against the config file's folder, so the daemon works from any
working directory.

This module reads the top-level keys; the hosts are read by config.hosts (which hands
each host's `transport:` and `backend:` to the adapter named there), what happens at a
case's end by config.finish, all with the reader of config.reader.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import yamlfile
from ..backends import BackendConfig
from ..errors import ConfigError
from ..retry import Policy
from ..settings import not_negative, positive, setting
from ..transports import TransportConfig
from .finish import FinishConfig, ResultsConfig, read_finish, read_results
from .hosts import GroupConfig, HostConfig, read_hosts
from .reader import NUMBER, Reader, can_make, resolve

ENV_VAR = "CASEFLOW_CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SHUTDOWN_GRACE_SECONDS = 30.0  # shutdown_grace_seconds' default
# shutdown_timeout_seconds' default: this long after the grace (whatever the grace is)
SHUTDOWN_MARGIN_SECONDS = 30.0


@dataclass(frozen=True)
class WebConfig:
    """The status page and /metrics (`web:`); None in Config when the key is absent."""

    host: str  # the address to listen on, loopback unless configured
    port: int  # 0: any free port (the log says which)
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
    # stability:
    quiet_seconds: float = setting(
        5.0, not_negative, "a case is admitted once nothing inside it changed for this long"
    )
    rescan_seconds: float = setting(
        30.0, positive, "how often the inbox is listed in full, besides the file-system events"
    )
    tick_seconds: float = setting(
        2.0, positive, "the longest the loop sleeps between ticks (it wakes when work is due)"
    )
    poll_seconds: float = setting(10.0, positive, "how often running jobs are polled")
    health_seconds: float = setting(
        60.0,
        positive,
        "how often each host that seems well is probed (its connection, its queue's daemon, "
        "its free disk), besides at the start and soon after an error",
    )
    low_disk_gib: float = setting(
        1.0,
        not_negative,
        "a host whose remote root has less free space than this (GiB) is shown as a problem "
        "(0: never)",
    )
    workers: int = setting(4, positive, "threads per host for its long steps")
    shutdown_grace_seconds: float = setting(
        SHUTDOWN_GRACE_SECONDS,
        not_negative,
        "on SIGTERM/SIGINT, how long steps in flight may finish",
    )
    # read with the grace given: at least it, by default SHUTDOWN_MARGIN_SECONDS after it
    shutdown_timeout_seconds: float = setting(
        SHUTDOWN_GRACE_SECONDS + SHUTDOWN_MARGIN_SECONDS,
        doc="on SIGTERM/SIGINT the daemon has ended after this long, whatever the hosts do",
    )
    stop_grace_seconds: float = setting(
        30.0, not_negative, "a stopped job is sent SIGKILL this long after SIGTERM"
    )
    retry: Policy = field(default_factory=Policy)
    log_level: str = setting(
        "INFO",
        lambda v: None if v.upper() in LOG_LEVELS else f"must be one of {', '.join(LOG_LEVELS)}",
        "the least severe records logged: DEBUG, INFO, WARNING or ERROR",
        key="level",
    )
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

    # the first host's ports (the only host of a single-host config)
    @property
    def transport(self) -> TransportConfig:
        return self.hosts[0].transport

    @property
    def backend(self) -> BackendConfig:
        return self.hosts[0].backend


def permission_warnings(config: Config) -> list[str]:
    """What anyone on this machine could change: a config that says which commands run,
    a database folder where the database (and its lock) could be replaced."""
    out = []
    checks = [
        (config.path, "the configuration", "chmod o-w"),
        (config.path.parent, "the configuration's folder", "chmod o-w"),
        (config.database.parent, "the database's folder", "chmod o-w"),
    ]
    for path, what, fix in checks:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o002:
            out.append(
                f"{what} {path} is writable by every user of this machine: anyone could "
                f"change what caseflow runs or records ({fix} {path})"
            )
    token = config.web.token_file if config.web else None
    if token is not None and token.exists() and token.stat().st_mode & 0o004:
        out.append(
            f"the status page's token file {token} is readable by every user of this "
            f"machine (chmod o-r {token})"
        )
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
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}): is it the configuration?"
        ) from exc
    try:
        data = yamlfile.load(text, name=str(path))
    except yamlfile.DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top")
    base = path.resolve().parent
    top = Reader(path, data)
    # top-level keys starting with "x-" are the user's own (e.g. YAML anchors to share)
    top.used |= {k for k in data if isinstance(k, str) and k.startswith("x-")}

    inbox = resolve(base, top.get("inbox", str))
    if inbox.exists() and not inbox.is_dir():
        raise top.error(
            "inbox",
            f"{inbox} is a file, not a folder (each case is a folder in "
            "the inbox: give the folder that holds them)",
        )
    if not inbox.is_dir():
        raise top.error("inbox", f"folder {inbox} does not exist (create it, or fix the path)")
    database = resolve(base, top.get("database", str, default="caseflow.db"))
    if database.is_dir():
        raise top.error(
            "database",
            f"{database} is a folder; give the database's file name "
            f"(e.g. {database / 'caseflow.db'})",
        )
    can_make(top, "database", database.parent)
    run = top.settings(
        Config,
        "tick_seconds",
        "poll_seconds",
        "health_seconds",
        "low_disk_gib",
        "workers",
        "shutdown_grace_seconds",
    )
    grace = run["shutdown_grace_seconds"]
    # the one setting whose default and check follow another's value
    run["shutdown_timeout_seconds"] = float(
        top.get(
            "shutdown_timeout_seconds",
            NUMBER,
            grace + SHUTDOWN_MARGIN_SECONDS,
            lambda v: (
                None if v >= grace else f"must be at least shutdown_grace_seconds ({grace:g})"
            ),
        )
    )
    run.update(top.settings(Config, "stop_grace_seconds"))

    stab = top.sub("stability")
    run.update(stab.settings(Config, "quiet_seconds", "rescan_seconds"))
    stab.finish()

    hosts = read_hosts(top, base, database.parent)

    rr = top.sub("retry")
    retry = Policy(**rr.settings(Policy))
    rr.finish()

    results = read_results(top, base, inbox)
    finish = read_finish(top, base, inbox)
    if finish.remote_cleanup != "never" and results.folder is None:
        raise top.error(
            "remote_cleanup",
            "removes remote case folders only after their results "
            "are home, but results.fetch is false; set it to never",
        )

    web = _read_web(top, base)

    lg = top.sub("log")
    level = lg.setting(Config, "log_level").upper()
    log_file = lg.get("file", str, None)
    if log_file is not None:
        log_path = resolve(base, log_file)
        if log_path.is_dir():
            raise lg.error("file", f"{log_path} is a folder; give the log's file name")
        if not log_path.parent.is_dir():
            raise lg.error("file", f"folder {log_path.parent} does not exist")
    lg.finish()
    top.finish()
    return Config(
        path=path.resolve(),
        inbox=inbox,
        database=database,
        hosts=hosts,
        **run,
        retry=retry,
        log_level=level,
        log_file=resolve(base, log_file) if log_file else None,
        results=results,
        finish=finish,
        web=web,
    )


def _read_web(top: Reader, base: Path) -> WebConfig | None:
    """`web: {listen: 127.0.0.1:8765, token_file: ...}`: the status page, off when absent."""
    if top.data.get("web") is None:
        top.used.add("web")
        return None
    wr = top.sub("web")
    listen = wr.get("listen", str, what='an address and port such as "127.0.0.1:8765"')
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise wr.error(
            "listen",
            f'expected an address and port such as "127.0.0.1:8765" or '
            f'"[::1]:8765", got {listen!r}',
        )
    token = wr.get("token_file", str, None)
    token_file = resolve(base, token) if token else None
    wr.finish()
    if token_file is None and not is_loopback(host):
        raise wr.error(
            "token_file",
            f"is required when listen is not a loopback address "
            f"({host}): the page and /metrics then need a bearer "
            "token read from this file",
        )
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise wr.error(
                "token_file", f"cannot read {token_file}: {getattr(exc, 'strerror', None) or exc}"
            ) from exc
        if not re.fullmatch(r"[A-Za-z0-9._~+/=-]{16,}", text):  # also a valid cookie value
            raise wr.error(
                "token_file",
                f"{token_file} must hold one token of at least 16 "
                "letters, digits or -._~+/= (e.g. `openssl rand -hex "
                "32`)",
            )
    return WebConfig(host=host, port=int(port), token_file=token_file)
