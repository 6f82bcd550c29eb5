"""A private OpenSSH server on 127.0.0.1 for the tests, and a TCP relay to cut its connections.

The server gets its own host key, client key, authorized_keys, known_hosts and
config in a temp folder, listens on a free port, and is stopped by pid.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "caseflow-test", "-f",
                    str(path)], check=True)


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


class SSHServer:
    """`port` is where clients connect (127.0.0.1). The optional keywords serve servers that
    are not directly on the host's loopback (tests/slurm_cluster.py: an sshd in a network
    namespace behind a relay): `launcher` is an argv prefix for sshd (e.g. `nsenter --net=F`),
    `listen_port` the port sshd itself listens on (default: `port`), `env` extra variables of
    remote sessions, `extra_config` extra sshd_config lines, `max_sessions` its MaxSessions."""

    def __init__(self, root: Path, port: int | None = None, *, listen_port: int | None = None,
                 launcher: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 extra_config: Sequence[str] = (), max_sessions: int = 100,
                 log_level: str = "ERROR"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.listen_port = listen_port or self.port
        self.launcher = list(launcher)
        self.env = dict(env or {})
        self.extra_config = list(extra_config)
        self.log_level = log_level  # sshd's LogLevel (sshd.log in `root`)
        self.max_sessions = max_sessions  # sessions at once on one connection
        self.host_key = self.root / "host_key"
        self.client_key = self.root / "client_key"
        self.known_hosts = self.root / "known_hosts"
        self.bin = self.root / "bin"  # first on the PATH of remote sessions (e.g. `pueue`)
        self.bin.mkdir(exist_ok=True)
        self.home = self.root / "home"  # HOME of remote sessions
        self.home.mkdir(exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.program = SSHD  # the sshd binary (its name is the PAM service: tests/sshd_mfa.py)
        if not self.host_key.exists():
            _keygen(self.host_key)
        if not self.client_key.exists():
            _keygen(self.client_key)
        shutil.copy(self.client_key.with_suffix(".pub"), self.root / "authorized_keys")
        self.write_known_hosts()

    @property
    def user(self) -> str:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name

    def host_key_line(self, port: int | None = None) -> str:
        kind, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{port or self.port} {kind} {key}\n"

    def write_known_hosts(self, path: Path | None = None, port: int | None = None) -> Path:
        path = path or self.known_hosts
        path.write_text(self.host_key_line(port))
        return path

    def config_text(self) -> str:
        r = self.root
        # sshd honours only the first SetEnv line: every variable goes on this one.
        env = {"PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home),
               **self.env}
        return "\n".join([
            f"Port {self.listen_port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {r / 'authorized_keys'}",
            f"PidFile {r / 'sshd.pid'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "MaxStartups 100",
            f"MaxSessions {self.max_sessions}",
            f"LogLevel {self.log_level}",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "Subsystem sftp internal-sftp",
            # Sessions get a HOME of their own: bash sources ~/.bashrc for commands sent over
            # SSH, and this machine's root .bashrc runs `pyenv init`, whose `pyenv rehash` waits
            # up to 60 s on a lock that a killed session can leave behind. A test host has
            # plain shell start-up, as a GPU host would.
            "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()),
            *self.extra_config,
            "",
        ])

    def start(self) -> "SSHServer":
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        conf = self.root / "sshd_config"
        conf.write_text(self.config_text())
        self.proc = subprocess.Popen([*self.launcher, self.program, "-D", "-e", "-f", str(conf)],
                                     stderr=open(self.root / "sshd.log", "ab"))
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not answer within 30 s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the listener and every session it serves (an outage, as a client sees it)."""
        if self.proc is None:
            return
        sessions = _descendants(self.proc.pid)
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.proc = None
        _kill(sessions)

    def kill_sessions(self) -> None:
        """Drop every open connection; the listener stays."""
        if self.proc is not None:
            _kill(_descendants(self.proc.pid))

    def restart(self) -> None:
        self.stop()
        self.start()


class Relay:
    """A TCP relay on 127.0.0.1 in front of a server: `cut()` drops every connection,
    `refuse()`/`accept()` turn new connections away or let them through again.
    The server is 127.0.0.1:`target_port`, or the unix socket `unix_socket` (a path).
    `to_server` and `to_client` count the bytes relayed each way (all connections)."""

    def __init__(self, target_port: int | None = None, rate: float | None = None, *,
                 unix_socket: str | Path | None = None):
        if (target_port is None) == (unix_socket is None):
            raise ValueError("give exactly one of target_port and unix_socket")
        self.target = ("127.0.0.1", target_port)
        self.unix_socket = None if unix_socket is None else str(unix_socket)
        self.rate = rate  # bytes per second and direction, per connection (None: unlimited)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.to_server = 0
        self.to_client = 0
        self._refusing = False
        self.errors: list[str] = []  # why relayed connections ended, other than a close
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                refusing = self._refusing
            if refusing:
                client.close()
                continue
            try:
                upstream = self._connect()
            except OSError as exc:
                if self.unix_socket is None:  # a refused TCP server: pass the refusal on
                    client.close()
                    continue
                # a unix-socket bridge stands in for a network path, which does not drop a
                # connection because the far end was busy for a moment: try a few times (a
                # full-suite run once lost a connection here with one retry), and say why
                upstream = None
                for attempt in range(5):
                    print(f"bridge: connecting to {self.unix_socket} failed ({exc}), "
                          f"attempt {attempt + 1}", file=sys.stderr, flush=True)
                    time.sleep(0.2 * (attempt + 1))
                    try:
                        upstream = self._connect()
                        break
                    except OSError as again:
                        exc = again
                if upstream is None:
                    client.close()
                    continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _connect(self) -> socket.socket:
        if self.unix_socket is None:
            return socket.create_connection(self.target, timeout=10)
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.settimeout(10)
            upstream.connect(self.unix_socket)
        except OSError:
            upstream.close()
            raise
        return upstream

    def _pump(self, a, b):
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(16384 if self.rate else 65536)
                    if not data:
                        raise OSError("closed")
                    (b if s is a else a).sendall(data)
                    with self._lock:
                        if s is a:
                            self.to_server += len(data)
                        else:
                            self.to_client += len(data)
                    if self.rate:
                        time.sleep(len(data) / self.rate)
        except (OSError, ValueError) as exc:  # ValueError: the other side was closed by cut()
            if str(exc) != "closed":
                with self._lock:
                    self.errors = [*self.errors[-19:], f"{type(exc).__name__}: {exc}"]
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def refuse(self) -> None:
        with self._lock:
            self._refusing = True
        self.cut()

    def accept(self) -> None:
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.sock.close()


def transport_settings(server: SSHServer, root: Path, **extra) -> dict:
    """The `transport:` section of a caseflow config that reaches `server`."""
    settings = {"kind": "ssh", "name": "testhost", "host": "127.0.0.1", "port": server.port,
                "user": server.user, "identity_file": str(server.client_key),
                "known_hosts": str(server.known_hosts), "root": str(root),
                "connect_timeout": 10, "reconnect_min_interval": 1}
    settings.update(extra)
    return settings
