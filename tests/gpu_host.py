"""A GPU host for tests that need the real remote side: a real sshd (or, for `openssh`, one
that asks for a one-time code) whose sessions find a real pueued's client first on their PATH,
behind a relay that can cut the connections. Used by the reliability suites and the model-based
test's remote profile."""

from __future__ import annotations

from pathlib import Path

from caseflow.config import TransportConfig
from caseflow.transports.openssh_master import Master
from pueue_daemon import PueueDaemon
from sshd import Relay, SSHServer, transport_settings
from sshd_mfa import MFAServer, open_master, openssh_settings


class GpuHost:
    """A real sshd whose sessions find a real pueue (the test daemon's client) first on their
    PATH, behind a relay. `kind` is the transport: `ssh` (paramiko), or `openssh` (the system
    ssh through a master connection; the sshd then asks for a one-time code, and a person's
    login is `login()`)."""

    def __init__(self, root: Path, version: str = "4.0.4", kind: str = "ssh"):
        self.kind = kind
        self.server = (MFAServer if kind == "openssh" else SSHServer)(root / "gpuhost").start()
        self.pueue = PueueDaemon(root / "pueue", version).start()
        (self.server.bin / "pueue").symlink_to(self.pueue.client)
        self.relay = Relay(self.server.port)
        self.known_hosts = self.server.write_known_hosts(
            root / "gpuhost" / "known_hosts_relay", port=self.relay.port
        )
        self.master = None
        if kind == "openssh":
            self.server.write_ssh_config(port=self.relay.port, known_hosts=self.known_hosts)
            self.control_path = str(root / "cm")

    def transport(self, remote_root: Path, **extra) -> dict:
        if self.kind == "openssh":
            settings = openssh_settings(
                self.server, remote_root, control_path=self.control_path, **extra
            )
            if self.master is None:
                self.master = Master(TransportConfig(**settings))
                self.login()
            return settings
        return transport_settings(
            self.server,
            remote_root,
            port=self.relay.port,
            known_hosts=str(self.known_hosts),
            **extra,
        )

    def login(self) -> None:
        """openssh: a person opens the master connection, answering the one-time code."""
        if self.master is not None and self.master.pid() is None:
            open_master(self.server, self.master)

    def tasks(self) -> dict:
        return self.pueue.tasks()

    def close(self) -> None:
        self.pueue.close()
        if self.master is not None:
            self.master.exit()
        self.relay.close()
        self.server.close() if self.kind == "openssh" else self.server.stop()


class GridEngineHost:
    """A one-host Grid Engine (tests/gridengine_cluster.py) as a GPU host: its own sshd in the
    cluster's network namespace, reached through the cluster's bridge (a Relay, which can cut
    the connections). The jobs run on this machine, in the cluster's namespace."""

    kind = "ssh"
    master = None

    def __init__(self, root: Path, slots: int):
        from gridengine_cluster import GridEngineCluster

        self.cluster = GridEngineCluster(root / "cell", queues={"all.q": slots}).start()
        self.relay = self.cluster.bridge

    def transport(self, remote_root: Path, **extra) -> dict:
        return self.cluster.transport_settings(remote_root, **extra)

    def close(self) -> None:
        self.cluster.stop()


# (transport, pueue version) of a GPU host; a suite's tests run over both transports on the
# newest pueue, or with @pytest.mark.parametrize("gpu_host", [...], indirect=True) on others
HOSTS = [("ssh", "4.0.4"), ("openssh", "4.0.4")]
CRASH_HOSTS = [("ssh", "3.4.1"), ("ssh", "4.0.4"), ("openssh", "4.0.4")]


def host_id(param) -> str:
    kind, version = param
    return kind if version == "4.0.4" else f"{kind}-pueue{version}"
