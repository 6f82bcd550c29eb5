"""One long-lived, verified paramiko connection to one host.

Host, port, user, key and ProxyJump may come from the caseflow config or from
an OpenSSH client config (`~/.ssh/config`, a `Host` alias included). Host keys
are checked against known_hosts before anything is sent: an unknown key is
refused unless the config says `accept_new_host_keys: true`, a changed key is
always refused. Passwords are never used; keys come from the config, the
OpenSSH config, the default key files or an ssh-agent.
"""

from __future__ import annotations

import getpass
import logging
import os
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from .. import metrics
from ..errors import AUTH, HOST_KEY, HostError, TransientError

log = logging.getLogger("caseflow.ssh")


REKEY_BYTES = 1 << 37  # 128 GiB each way (see _open)


class Unreachable(TransientError):
    """The host cannot be reached (connecting failed); not tried again before the reconnect
    interval. The engine sends cases that are not uploaded yet to other hosts."""

    unreachable = True


_PARAMIKO: Any = paramiko  # see _TRANSPORT_FACTORY


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it receives at once.

    sshd leaves Nagle's algorithm on for sessions without a terminal, so a small packet of
    its waits until the one before it is acknowledged, and Linux delays an ACK by up to
    40 ms when it has nothing to send. Right after the login sshd sends two small messages
    unasked (hostkeys-00@openssh.com and a debug message), and its answer to the first
    channel open then waited for the client's delayed ACK: the open took 42-46 ms on
    loopback instead of 1 ms (tcpdump: the ACK 43 ms late, the answer right after it). An
    ACK sent after every read (TCP_QUICKACK, which Linux clears again as it goes) removes
    the wait; it costs a system call per read."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if data and _QUICKACK is not None:
            self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return data


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def tcp_connection(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection for SSH: TCP_NODELAY (many small request/reply packets, channel
    opens and status polls: without it each waits ~40 ms for the peer's delayed ACK) and
    quick ACKs (_QuickAckSocket)."""
    plain = socket.create_connection((host, port), timeout=timeout)
    try:
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = _QuickAckSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
    except BaseException:
        plain.close()
        raise
    sock.settimeout(timeout)
    return sock


class _GcmFirstTransport(paramiko.Transport):
    """AES-GCM first: 1.25-1.5x faster than paramiko's default AES-CTR for bulk data here."""

    _preferred_ciphers = tuple(
        sorted(_PARAMIKO.Transport._preferred_ciphers, key=lambda c: 0 if "gcm" in c else 1)
    )


# paramiko as it is, where its type stubs (types-paramiko) say less: its private cipher list,
# a list of key files for `key_filename`, any Transport subclass as `transport_factory`
_TRANSPORT_FACTORY: Any = _GcmFirstTransport


@dataclass(frozen=True)
class Endpoint:
    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    known_hosts: str
    proxy_jump: str | None

    def __str__(self):
        return f"{self.user}@{self.hostname}:{self.port}"


def _ssh_config(path: str | None) -> paramiko.SSHConfig | None:
    path = path or os.path.expanduser("~/.ssh/config")
    if not os.path.isfile(path):
        return None
    return paramiko.SSHConfig.from_path(path)


def resolve_endpoint(
    alias: str, port=None, user=None, identity_file=None, known_hosts=None, ssh_config_path=None
) -> Endpoint:
    """Combine the caseflow settings (which win) with the OpenSSH client config for `alias`."""
    conf = _ssh_config(ssh_config_path)
    entry = conf.lookup(alias) if conf else {}
    hostname = entry.get("hostname", alias)
    if port is None:
        port = int(entry.get("port", 22))
    if user is None:
        user = entry.get("user") or getpass.getuser()
    identities: tuple[str, ...]
    if identity_file:
        identities = (identity_file,)
    else:
        identities = tuple(
            os.path.expanduser(p)
            for p in entry.get("identityfile", [])
            if os.path.isfile(os.path.expanduser(p))
        )
    if not known_hosts:
        files = entry.get("userknownhostsfile", "").split()
        known_hosts = (
            os.path.expanduser(files[0]) if files else os.path.expanduser("~/.ssh/known_hosts")
        )
    jump = entry.get("proxyjump")
    if jump and jump.lower() == "none":
        jump = None
    return Endpoint(alias, hostname, int(port), user, identities, known_hosts, jump)


def _host_id(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: str, accept_new: bool):
        self.known_hosts = known_hosts
        self.accept_new = accept_new

    def missing_host_key(self, client, hostname, key):
        fingerprint = key.fingerprint if hasattr(key, "fingerprint") else key.get_name()
        if not self.accept_new:
            raise HostError(
                f"the host key of {hostname} ({fingerprint}) is not in {self.known_hosts}; "
                f"check it and add it (e.g. ssh-keyscan), or set "
                f"transport.accept_new_host_keys: true to trust it on first use",
                kind=HOST_KEY,
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        Path(self.known_hosts).parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a", encoding="utf-8") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        log.warning(
            "trusted the new host key of %s (%s) and added it to %s",
            hostname,
            fingerprint,
            self.known_hosts,
        )


def known_hosts_lines(path: str, name: str) -> list[int]:
    """The lines of the known_hosts file `path` with a key for `name` (as paramiko and
    OpenSSH write it: `[host]:port` for a port other than 22), plain or hashed."""
    found = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if len(fields) < 3 or line.lstrip().startswith("#"):
            continue
        names = fields[1 if fields[0].startswith("@") else 0].split(",")
        for entry in names:
            if entry == name:
                found.append(number)
                break
            if entry.startswith("|1|"):
                salt = entry.split("|")[2]
                if paramiko.HostKeys.hash_host(name, salt) == entry:
                    found.append(number)
                    break
    return found


def changed_key_hint(path: str, name: str) -> str:
    """What to do about a changed host key, as OpenSSH says it: the known_hosts file, the
    line, and the command that removes the old key (once the new one is known to be right)."""
    lines = known_hosts_lines(path, name)
    where = f"line {', '.join(map(str, lines))} of {path}" if lines else path
    return (
        f"The key caseflow trusts for {name} is on {where}. If the host's key was changed on "
        f"purpose (ask its admin), remove the old one with: ssh-keygen -f {shlex.quote(path)} "
        f"-R {shlex.quote(name)} (then accept the new key: transport.accept_new_host_keys, or "
        "an ssh to the host)"
    )


def still_failing(alias: str, failure: Exception | None, wait: float) -> Exception:
    """What a connection attempt within the reconnect interval after a failure raises: the
    same host problem again (a refused host key stays one: seen as "unreachable" it was
    charged to the case and hid the host key's problem), or that the host is unreachable."""
    if isinstance(failure, HostError):
        return HostError(str(failure), kind=failure.kind)
    return Unreachable(f"{alias} unreachable ({failure}); not trying again for {wait:.0f} s")


def classify(exc: Exception, what: str) -> Exception:
    """A paramiko/socket error as caseflow's TransientError or HostError."""
    if isinstance(exc, (HostError, TransientError)):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        fingerprint = getattr(exc.key, "fingerprint", "")
        return HostError(
            f"{what}: the host key of {exc.hostname} has CHANGED (got "
            f"{exc.key.get_name()} {fingerprint}, "
            f"expected the one in known_hosts); refusing to connect",
            kind=HOST_KEY,
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return HostError(
            f"{what}: authentication failed ({exc}); check the key "
            "(transport.identity_file) or the ssh-agent",
            kind=AUTH,
        )
    if isinstance(exc, socket.gaierror):
        return TransientError(f"{what}: cannot resolve the host name ({exc.strerror})")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TransientError(f"{what}: timed out")
    if isinstance(exc, (ConnectionError, EOFError, paramiko.SSHException, OSError)):
        return TransientError(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))
    return exc  # not ours to classify: the engine reports it as an internal error


class Connection:
    """A paramiko client for one endpoint, opened on demand and kept; thread-safe."""

    def __init__(self, cfg, clock=time.monotonic):
        self.cfg = cfg
        self.clock = clock
        self.endpoint = resolve_endpoint(
            cfg.host, cfg.port, cfg.user, cfg.identity_file, cfg.known_hosts, cfg.ssh_config
        )
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._jump: paramiko.SSHClient | None = None
        self._failed_at: float | None = None
        self._failure: Exception | None = None
        # the failure of a connection made ahead (connect_ahead), for the next caller to raise
        self._unreported: Exception | None = None
        self.connects = 0  # connection attempts made (for tests and benchmarks)

    def connect_ahead(self) -> None:
        """Connect in a thread of its own unless connected (or failed a moment ago); the
        next `client()` waits for it and gets its client, or raises its error (a host key
        problem as itself, not as "unreachable")."""
        with self._lock:
            if self._live() is not None or self._failing():
                return
        threading.Thread(target=self._ahead, name="caseflow-connect", daemon=True).start()

    def _ahead(self) -> None:
        # the error is kept under the lock of the attempt itself: a caller waiting on that
        # lock must find it, not only the failure's time (it then raised "unreachable" for
        # a host key problem: a full-suite run of test_ssh.py)
        with self._lock:
            try:
                self._connected()
            except Exception as exc:  # kept for the next caller: reported once, by it
                if self._unreported is None:
                    self._unreported = exc

    def _failing(self) -> bool:
        """The last attempt failed less than `reconnect_min_interval` ago."""
        return (
            self._failed_at is not None
            and self.clock() - self._failed_at < self.cfg.reconnect_min_interval
        )

    def _live(self) -> paramiko.SSHClient | None:
        c = self._client
        t = c.get_transport() if c is not None else None
        return c if c is not None and t is not None and t.is_active() else None

    def client(self) -> paramiko.SSHClient:
        with self._lock:
            return self._connected()

    def _connected(self) -> paramiko.SSHClient:
        """The live client, connecting if need be; the caller holds the lock."""
        live = self._live()
        if live is not None:
            return live
        if self._unreported is not None:
            err, self._unreported = self._unreported, None
            if self._failing():  # else too old: try again
                raise err
        self._drop()
        if self._failed_at is not None:
            since = self.clock() - self._failed_at
            if since < self.cfg.reconnect_min_interval:
                raise still_failing(
                    self.endpoint.alias, self._failure, self.cfg.reconnect_min_interval - since
                )
        try:
            self._client = self._open()
        except Exception as exc:
            metrics.ssh_error(self.cfg.name)
            err = classify(exc, f"connecting to {self.endpoint}")
            if isinstance(exc, paramiko.BadHostKeyException):
                ep = self.endpoint  # its name in known_hosts: [host]:port beside port 22
                name = ep.hostname if ep.port == 22 else f"[{ep.hostname}]:{ep.port}"
                err = HostError(f"{err}. {changed_key_hint(ep.known_hosts, name)}", kind=HOST_KEY)
            if isinstance(err, TransientError):
                err = Unreachable(str(err))
            self._failed_at = self.clock()
            self._failure = err
            self._drop()
            raise err from exc
        self._failed_at = None
        return self._client

    def _open(self) -> paramiko.SSHClient:
        ep, cfg = self.endpoint, self.cfg
        sock: paramiko.Channel | socket.socket
        if ep.proxy_jump:
            self._jump = self._connect_jump(ep.proxy_jump)
            sock = transport_of(self._jump).open_channel(
                "direct-tcpip",
                (ep.hostname, ep.port),
                ("127.0.0.1", 0),
                timeout=cfg.connect_timeout,
            )
        else:
            sock = tcp_connection(ep.hostname, ep.port, cfg.connect_timeout)
        client = self._new_client(ep.known_hosts)
        self.connects += 1
        metrics.ssh_connect(cfg.name)
        keys: Any = list(ep.identity_files) or None  # see _TRANSPORT_FACTORY
        try:
            client.connect(
                ep.hostname,
                ep.port,
                username=ep.user,
                key_filename=keys,
                look_for_keys=not ep.identity_files,
                allow_agent=True,
                timeout=cfg.connect_timeout,
                banner_timeout=cfg.connect_timeout,
                auth_timeout=cfg.connect_timeout,
                channel_timeout=cfg.connect_timeout,
                sock=sock,
                transport_factory=_TRANSPORT_FACTORY,
            )
        except BaseException:
            client.close()
            sock.close()
            raise
        transport = transport_of(client)
        # paramiko starts a key re-exchange after every 512 MiB; a channel closing in that
        # moment stalls its transport thread for 30 s and then drops the connection (paramiko
        # issue #822; two 1 GiB uploads in ranges hit it in their first runs). With a limit
        # above OpenSSH's own (2^32 cipher blocks: 64 GiB), the server starts each
        # re-exchange, which is safe: nothing of a channel can arrive during it.
        transport.packetizer.REKEY_BYTES = REKEY_BYTES
        if cfg.keepalive_seconds:
            transport.set_keepalive(int(max(1, cfg.keepalive_seconds)))
        log.info(
            "connected to %s (%s, cipher %s)",
            ep.alias,
            ep,
            getattr(transport, "remote_cipher", "?"),
        )  # not in paramiko's stubs
        return client

    def _new_client(self, known_hosts: str) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if os.path.isfile(known_hosts):
            client.load_host_keys(known_hosts)
        client.set_missing_host_key_policy(
            _HostKeyPolicy(known_hosts, self.cfg.accept_new_host_keys)
        )
        return client

    def _connect_jump(self, spec: str) -> paramiko.SSHClient:
        first = spec.split(",")[0].strip()
        user, _, hostport = first.rpartition("@")
        host, _, port = hostport.partition(":")
        ep = resolve_endpoint(
            host,
            int(port) if port else None,
            user or None,
            None,
            self.cfg.known_hosts,
            self.cfg.ssh_config,
        )
        sock = tcp_connection(ep.hostname, ep.port, self.cfg.connect_timeout)
        client = self._new_client(ep.known_hosts)
        self.connects += 1
        keys: Any = list(ep.identity_files) or self._fallback_keys()  # see _TRANSPORT_FACTORY
        try:
            client.connect(
                ep.hostname,
                ep.port,
                username=ep.user,
                key_filename=keys,
                look_for_keys=not ep.identity_files,
                allow_agent=True,
                timeout=self.cfg.connect_timeout,
                banner_timeout=self.cfg.connect_timeout,
                auth_timeout=self.cfg.connect_timeout,
                sock=sock,
                transport_factory=_TRANSPORT_FACTORY,
            )
        except BaseException:
            # paramiko leaves a client whose connect failed (refused key, unknown host key)
            # open, with its transport thread and socket: one more at every attempt
            client.close()
            sock.close()
            raise
        transport_of(client).packetizer.REKEY_BYTES = REKEY_BYTES  # it carries the uploads too
        return client

    def _fallback_keys(self):
        return list(self.endpoint.identity_files) or None

    def _drop(self) -> None:
        for c in (self._client, self._jump):
            if c is not None:
                try:
                    c.close()
                except Exception:  # closing a broken client must never raise
                    pass
        self._client = None
        self._jump = None

    def reset(self) -> None:
        """Forget the connection (after an error on it); the next call reconnects."""
        with self._lock:
            self._drop()

    def discard(self, transport: paramiko.Transport) -> None:
        """Forget the connection if it is still the one on `transport`: another thread may
        have made a new one since, which is kept."""
        with self._lock:
            if self._client is not None and self._client.get_transport() is transport:
                self._drop()

    def close(self) -> None:
        self.reset()


def transport_of(client: paramiko.SSHClient) -> paramiko.Transport:
    """The transport of a client that has connected (paramiko's is None before)."""
    transport = client.get_transport()
    if transport is None:
        raise TransientError("the SSH connection is not open")
    return transport
