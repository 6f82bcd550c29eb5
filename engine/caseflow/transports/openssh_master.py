"""The OpenSSH master connection of one host, for the `openssh` transport.

One `ssh` master per host holds the authenticated connection; every command caseflow runs
is an `ssh` process that opens one channel over it through the control socket. The master
is opened either by a person, with `caseflow login HOST` in a terminal (where the site may ask
for a password and a one-time code, a hardware key, ...), or with `master: daemon` by caseflow
itself without prompts (keys, agent, Kerberos).

caseflow's own `ssh` calls never open a connection of their own: they carry
`ControlMaster=no` and `ProxyCommand=false`, so without a master they fail at once, having
sent nothing (no login attempt a site could count against the account, no prompt), and
`BatchMode=yes`, so nothing ever waits on a prompt. Host keys are checked by OpenSSH,
`StrictHostKeyChecking=yes` unless the config says otherwise. The user's OpenSSH client
config applies as with any `ssh` (Host aliases, ProxyJump, IdentityAgent, certificates,
GSSAPI, Match); caseflow's settings, given on the command line, win over it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

from ..errors import AUTH, HOST_KEY, LOGIN, HostError, TransientError
from .ssh_connection import Unreachable, still_failing
from .ssh_settings import CONTROL_PATH_MAX

log = logging.getLogger("caseflow.openssh")

SSH = "ssh"

# what OpenSSH prints when it refuses a host key (StrictHostKeyChecking), and when the
# server refused the credentials
_HOST_KEY = (
    "host key verification failed",
    "remote host identification has changed",
    "host key is known for",
    "no matching host key",
)
_AUTH = ("permission denied", "too many authentication failures")
_UNREACHABLE = (
    "connection refused",
    "connection timed out",
    "no route to host",
    "could not resolve hostname",
    "network is unreachable",
    "connection closed",
    "connection reset",
    "kex_exchange_identification",
    "operation timed out",
    "timeout, server not responding",
    "broken pipe",
)


class NeedsLogin(HostError):
    """No master connection to the host, and only a person can open one. Work on the host
    pauses (no case fails, none is charged an attempt) and is probed every
    `probe_seconds`: it goes on by itself once someone has logged in."""

    def __init__(self, host: str, probe_seconds: float):
        super().__init__(f"needs login: caseflow login {host}", kind=LOGIN)
        self.probe_seconds = probe_seconds


def _quoted(value: str) -> str:
    """An `-o Key=value` value as OpenSSH's config parser reads it back (spaces allowed)."""
    return f'"{value}"' if re.search(r"\s", value) else value


def _literal(path: str) -> str:
    """A path of caseflow's for an option that OpenSSH expands %-tokens in."""
    return _quoted(path.replace("%", "%%"))


class Master:
    """How to reach one host through its master connection (its `OpenSSHConfig`)."""

    def __init__(self, cfg, ssh: str = SSH, clock=time.monotonic):
        self.cfg = cfg
        self.ssh = ssh
        self.clock = clock
        self.alias = cfg.host
        self._effective: dict[str, str] | None = None  # `ssh -G`
        self._lock = threading.Lock()  # one opening at a time (master: daemon)
        self._failed_at: float | None = None
        self._failure: Exception | None = None
        self.opened = 0  # masters opened by this process (tests, benchmarks)

    # -- argument lists ----------------------------------------------------------------
    def options(self) -> list[str]:
        """What every `ssh` of this host is given: caseflow's settings and the control path."""
        cfg = self.cfg
        opts = ["-F", cfg.ssh_config] if cfg.ssh_config else []
        if cfg.port:
            opts += ["-p", str(cfg.port)]
        if cfg.user:
            opts += ["-l", cfg.user]
        if cfg.identity_file:
            opts += [
                "-o",
                f"IdentityFile={_literal(cfg.identity_file)}",
                "-o",
                "IdentitiesOnly=yes",
            ]
        if cfg.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={_literal(cfg.known_hosts)}"]
        return opts + [
            "-o",
            f"StrictHostKeyChecking={cfg.strict_host_key_checking}",
            "-o",
            f"ControlPath={_quoted(cfg.control_path)}",
        ]

    def command(self, remote_command: str) -> list[str]:
        """`ssh` running `remote_command` (one shell string) over the master, and only there."""
        return [
            self.ssh,
            *self.options(),
            "-o",
            "ControlMaster=no",
            "-o",
            "BatchMode=yes",
            "-o",
            "ProxyCommand=false",
            "-T",
            "-x",
            self.alias,
            remote_command,
        ]

    def opening(self, interactive: bool) -> list[str]:
        """`ssh` that opens the master and goes to the background once authenticated."""
        cfg = self.cfg
        argv = [
            self.ssh,
            *self.options(),
            *self._gcm_first(),
            "-o",
            "ControlMaster=yes",
            "-o",
            f"ControlPersist={cfg.control_persist}",
            "-o",
            f"ConnectTimeout={max(1, round(cfg.connect_timeout))}",
        ]
        if cfg.keepalive_seconds:  # a dead link ends the master, so the host is paused
            argv += ["-o", f"ServerAliveInterval={max(1, round(cfg.keepalive_seconds))}"]
        if not interactive:
            argv += ["-o", "BatchMode=yes"]
        return argv + ["-N", "-f", self.alias]

    def control(self, operation: str) -> list[str]:
        return [self.ssh, *self.options(), "-O", operation, self.alias]

    def _gcm_first(self) -> list[str]:
        """The ciphers the config allows, AES-GCM first (as the ssh transport does): the
        master encrypts every channel in one process, and 512 MiB through ssh into `cat`
        took 3.8-6.0 s (median 4.5) with aes128-gcm, 4.8-7.5 s (median 5.1) with OpenSSH's
        default chacha20-poly1305 (4 runs each, AES-NI, 2 cores under other load). The set
        stays the user's; only the order of preference changes."""
        ciphers = self.effective().get("ciphers", "").split(",")
        gcm = [c for c in ciphers if "gcm" in c]
        if not gcm or ciphers[0] in gcm:
            return []
        return ["-o", "Ciphers=" + ",".join(gcm + [c for c in ciphers if c not in gcm])]

    # -- the control socket ------------------------------------------------------------
    def effective(self) -> dict[str, str]:
        """The client config as ssh applies it to this host (`ssh -G`): tokens expanded."""
        if self._effective is None:
            res = subprocess.run(
                [self.ssh, *self.options(), "-G", self.alias],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=30,
            )
            found = dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
            if res.returncode != 0 or "controlpath" not in found:
                raise HostError(
                    f"the OpenSSH client config for {self.alias} cannot be read: "
                    f"{res.stderr.strip()[:300] or 'no control path'}"
                )
            self._effective = found
        return self._effective

    def socket_path(self) -> str:
        """The control socket's path with OpenSSH's tokens expanded."""
        return self.effective()["controlpath"]

    def prepare_folder(self) -> None:
        """The control socket's folder exists and only this user can reach into it (whoever
        can connect to the socket uses the authenticated connection)."""
        path = self.socket_path()
        if len(os.fsencode(path)) > CONTROL_PATH_MAX:
            raise HostError(
                f"the control socket path {path} is {len(os.fsencode(path))} bytes; "
                f"unix sockets allow {CONTROL_PATH_MAX} here: set "
                "transport.control_path to a shorter one"
            )
        folder = Path(path).parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise HostError(
                f"the control socket's folder {folder} must belong to this user "
                "and be closed to others (chmod 700)"
            )

    def remove_stale(self) -> None:
        """A master that was killed leaves its socket behind; OpenSSH would then not start a
        new master there ("ControlSocket ... already exists, disabling multiplexing")."""
        path = self.socket_path()
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
                log.info("removed the stale control socket %s", path)
        except FileNotFoundError:
            pass

    # -- state -------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The master's pid when one answers on the control socket, else None."""
        try:
            res = subprocess.run(
                self.control("check"),
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=30,
            )
        except subprocess.TimeoutExpired:
            return None
        found = re.search(r"Master running \(pid=(\d+)\)", res.stderr)
        return int(found.group(1)) if res.returncode == 0 and found else None

    def is_up(self) -> bool:
        return self.pid() is not None

    def exit(self) -> bool:
        """Ask the master to close (`ssh -O exit`); True when one was there."""
        res = subprocess.run(
            self.control("exit"),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
        )
        return res.returncode == 0

    # -- opening -----------------------------------------------------------------------
    def login(self) -> int:
        """Open the master in this terminal: ssh asks whatever the site asks. Returns ssh's
        exit code."""
        self.prepare_folder()
        self.remove_stale()
        # ssh goes to the background with daemon(), whose child is briefly still in the
        # terminal's process group: a hang-up then (the terminal closing, or the test's
        # pseudo-terminal ending) would kill the new master. An ignored SIGHUP stays ignored
        # in ssh (it keeps SIG_IGN), as with nohup.
        proc = subprocess.run(
            self.opening(interactive=True),
            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
        )
        if proc.returncode == 0:
            self.opened += 1
        return proc.returncode

    def ensure(self) -> None:
        """`master: daemon`: open the master without prompts unless it is up; at most one
        attempt per reconnect interval. `master: login`: NeedsLogin unless it is up."""
        if self.cfg.master != "daemon":
            if not self.is_up():
                raise NeedsLogin(self.cfg.name, self.probe_seconds)
            return
        with self._lock:
            if self.is_up():
                return
            if self._failed_at is not None:
                since = self.clock() - self._failed_at
                if since < self.cfg.reconnect_min_interval:
                    raise still_failing(
                        self.alias, self._failure, self.cfg.reconnect_min_interval - since
                    )
            try:
                self._open_batch()
            except (HostError, TransientError) as exc:
                self._failed_at, self._failure = self.clock(), exc
                raise
            self._failed_at = None

    @property
    def probe_seconds(self) -> float:
        return max(1.0, self.cfg.reconnect_min_interval)

    def _open_batch(self) -> None:
        self.prepare_folder()
        self.remove_stale()
        try:
            res = subprocess.run(
                self.opening(interactive=False),
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                timeout=self.cfg.connect_timeout * 2 + 10,
            )
        except subprocess.TimeoutExpired as exc:
            raise Unreachable(
                f"connecting to {self.alias}: no answer within "
                f"{self.cfg.connect_timeout * 2 + 10:.0f} s"
            ) from exc
        if res.returncode == 0:
            self.opened += 1
            log.info("opened the master connection to %s (%s)", self.alias, self.socket_path())
            return
        raise opening_error(self.alias, res.stderr)


def opening_error(alias: str, stderr: str) -> Exception:
    """What an `ssh` that could not connect said, as caseflow's error."""
    text = " ".join(stderr.split())[:400]
    low = text.lower()
    if any(s in low for s in _HOST_KEY):
        return HostError(
            f"the host key of {alias} was refused by OpenSSH (unknown or CHANGED; "
            f"nothing was sent): {text}",
            kind=HOST_KEY,
        )
    if any(s in low for s in _AUTH):
        return HostError(
            f"authentication to {alias} failed: {text}; check the key, agent or "
            "ticket (master: daemon cannot answer prompts: use master: login)",
            kind=AUTH,
        )
    if any(s in low for s in _UNREACHABLE) or not low:
        return Unreachable(f"connecting to {alias}: {text or 'ssh exited 255'}")
    return TransientError(f"connecting to {alias}: {text}")
