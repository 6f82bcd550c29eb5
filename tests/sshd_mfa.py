"""A private OpenSSH server on 127.0.0.1 that asks for a key *and* a one-time code (TOTP),
as the login nodes of many HPC centres do; and a pseudo-terminal that answers it.

The code is checked by PAM's TOTP module from Debian (`libpam-oath`); the tests make the codes
with `oathtool` (package `oathtool`), as a person's authenticator app would. sshd names its PAM
service after the name it was started as, so each server runs as a symlink of its own
(`<root>/caseflow-test-mfa-<port>` -> sshd) and gets a service file of its own in
/etc/pam.d (removed by `close()`); the machine's own `sshd` service is never touched.

pam_oath refuses a code whose time step is not newer than the last one accepted (a replay), so
`next_code()` gives the code of a step no login has used yet (up to `WINDOW` steps ahead).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

from sshd import SSHD, Relay, SSHServer

STEP = 30        # seconds per TOTP code (the authenticator apps' default)
WINDOW = 40      # how many steps around the present a code may be from (pam_oath's window)
PROMPT = r"One-time password \(OATH\) for `[^']*': "  # what pam_oath asks
ACCEPTED = "Accepted keyboard-interactive/pam for"    # sshd's log line of one full login


class MFAServer(SSHServer):
    """An `SSHServer` that wants the client key and then a one-time code
    (`AuthenticationMethods publickey,keyboard-interactive`, PAM with pam_oath)."""

    def __init__(self, root: Path, port: int | None = None, **kwargs):
        super().__init__(root, port, **kwargs)
        self.secret_file = self.root / "oath_secret"
        self.users_file = self.root / "users.oath"
        if not self.secret_file.exists():
            self.secret_file.write_text(secrets.token_hex(20))
            self.secret_file.chmod(0o600)
            self.users_file.write_text(f"HOTP/T{STEP} {self.user} - {self.secret}\n")
            self.users_file.chmod(0o600)
        self.service = f"caseflow-test-mfa-{self.port}"
        self.pam_file = Path("/etc/pam.d") / self.service
        self.program = str(self.root / self.service)
        self._last_step = 0
        self.ssh_config = self.root / "ssh_config"
        self.write_ssh_config()

    @property
    def secret(self) -> str:
        return self.secret_file.read_text().strip()

    def config_text(self) -> str:
        text = super().config_text()
        for old, new in (("KbdInteractiveAuthentication no", "KbdInteractiveAuthentication yes"),
                         ("UsePAM no", "UsePAM yes"),
                         # the tests run as root; a person's login node would not need this
                         ("PermitRootLogin prohibit-password", "PermitRootLogin yes"),
                         ("LogLevel ERROR", "LogLevel INFO"),  # INFO logs each login
                         ("MaxSessions 100", "MaxSessions 10")):  # OpenSSH's default
            assert old in text, old
            text = text.replace(old, new)
        return text + "AuthenticationMethods publickey,keyboard-interactive\n"

    def start(self) -> "MFAServer":
        self.pam_file.write_text(
            f"# caseflow's tests (tests/sshd_mfa.py): a key, then a one-time code\n"
            f"auth required pam_oath.so usersfile={self.users_file} window={WINDOW} digits=6\n"
            "account required pam_permit.so\n"
            "session required pam_permit.so\n")
        if not os.path.lexists(self.program):
            os.symlink(SSHD, self.program)
        super().start()
        return self

    def close(self) -> None:
        self.stop()
        self.pam_file.unlink(missing_ok=True)

    def next_code(self) -> str:
        """The one-time code of the present time step, or of the next one no login used."""
        step = max(int(time.time()) // STEP, self._last_step + 1)
        self._last_step = step
        return subprocess.run(["oathtool", "--totp", "-N", f"@{step * STEP}", self.secret],
                              capture_output=True, text=True, check=True).stdout.strip()

    def logins(self) -> int:
        """Complete authentications (key and code) the server has logged."""
        log = self.root / "sshd.log"
        return log.read_text(errors="replace").count(ACCEPTED) if log.exists() else 0

    def write_ssh_config(self, port: int | None = None, known_hosts: Path | None = None) -> Path:
        """An OpenSSH client config with a `Host` alias for this server (how a person at an
        HPC centre reaches a login node: the alias in ~/.ssh/config)."""
        self.ssh_config.write_text("\n".join([
            "Host mfa-login-node",
            "  HostName 127.0.0.1",
            f"  Port {port or self.port}",
            f"  User {self.user}",
            f"  IdentityFile {self.client_key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {known_hosts or self.known_hosts}",
            ""]))
        return self.ssh_config


class LoginNode:
    """An MFAServer behind a relay (to count or cut connections); the alias of its
    ssh_config points at the relay."""

    def __init__(self, root: Path):
        self.server = MFAServer(root / "login-node").start()
        self.relay = Relay(self.server.port)
        self.known_hosts = self.server.write_known_hosts(
            root / "login-node" / "known_hosts_relay", port=self.relay.port)
        self.server.write_ssh_config(port=self.relay.port, known_hosts=self.known_hosts)

    def close(self, *configs: Path) -> None:
        """Close the masters of these caseflow configs, then the relay and the server."""
        from caseflow.config import load_config
        from caseflow.transports.openssh_master import Master
        for config in configs:
            for host in load_config(config).hosts:
                if host.transport.kind == "openssh":
                    Master(host.transport).exit()
        self.relay.close()
        self.server.close()


def openssh_settings(server: MFAServer, root: Path, **extra) -> dict:
    """The `transport:` section of a caseflow config that reaches `server` through the
    alias of its ssh_config (key, port, user and known_hosts come from there)."""
    settings = {"kind": "openssh", "name": "testhost", "host": "mfa-login-node",
                "ssh_config": str(server.ssh_config), "root": str(root),
                "connect_timeout": 10, "reconnect_min_interval": 1}
    settings.update(extra)
    return settings


def pty_login(server: MFAServer, config: Path, host: str | None = None, timeout: float = 60,
              answer: bool = True):
    """`caseflow login` in a real pseudo-terminal, answering the one-time code prompt once
    (`answer=False`: expect no prompt). Returns (exit status, everything the terminal showed)."""
    import pexpect
    args = ["-m", "caseflow.cli", "login", "-c", str(config), *([host] if host else [])]
    child = pexpect.spawn(sys.executable, args, encoding="utf-8", timeout=timeout,
                          env={**os.environ, "TERM": "dumb"})
    shown, found = "", 1
    if answer:
        found = child.expect([PROMPT, pexpect.EOF])
        shown += child.before + (child.after if found == 0 else "")
        if found == 0:
            child.sendline(server.next_code())
    if found == 0 or not answer:
        child.expect(pexpect.EOF)
        shown += child.before
    child.close()
    return child.exitstatus, shown


def prompts_in(text: str) -> int:
    return len(re.findall(PROMPT, text))


def open_master(server: MFAServer, master, timeout: float = 60) -> int:
    """Open `master` (an openssh_master.Master) as a person would, answering the code prompt
    in a pseudo-terminal: for tests that make transports without a config file. Returns the
    master's pid."""
    import pexpect
    master.prepare_folder()
    master.remove_stale()
    argv = master.opening(interactive=True)
    # SIGHUP ignored, as `caseflow login` does (see Master.login)
    child = pexpect.spawn("sh", ["-c", 'trap "" HUP; exec "$@"', "ssh", *argv],
                          encoding="utf-8", timeout=timeout)
    child.expect(PROMPT)
    child.sendline(server.next_code())
    child.expect(pexpect.EOF)
    child.close()
    pid = master.pid()
    assert child.exitstatus == 0 and pid, f"no master: {child.before!r}"
    return pid
