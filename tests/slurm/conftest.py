"""Fixtures for the tests against a real one-node Slurm cluster (tests/slurm_cluster.py).

The cluster runs in a network namespace of its own; tests reach it like a GPU host, over SSH:

    def test_something(slurm_cluster, tmp_path):
        settings = slurm_cluster.transport_settings(tmp_path / "remote")  # `transport:` section
        transport = SSHTransport(TransportConfig(**settings))
        transport.run(["sbatch", "--parsable", "--wrap", "true"])

`slurm_cluster.run(argv)` runs a command inside the namespace directly (assertions only).
The `slurm_cluster` fixture (one per session) is in tests/slurm_fixtures.py, shared with the
backend contract suite. Without Slurm or munge installed it fails (it does not skip):
.ci/system-deps installs them.
"""

import sys
import time

import pytest

from caseflow.config import TransportConfig
from caseflow.transports.ssh import SSHTransport
from caseflow.transports.ssh_connection import Unreachable
from slurm_cluster import _tail
from slurm_fixtures import LOST_CONNECTS


@pytest.fixture
def slurm_transport(slurm_cluster, tmp_path):
    """caseflow's SSH transport to the cluster's host (remote root: tmp_path / "remote"),
    connected. The way in is a two-piece bridge standing in for a network path
    (tests/slurm_cluster.py); in two full-suite runs on one machine it lost one connection
    attempt each at the server's banner (EOF; the cause is not known, see the cluster's
    sshd.log at INFO). The tests here are about Slurm, so a lost first attempt is made again
    (a fresh transport: a failed one waits `reconnect_min_interval`), and said on stderr and in
    the run's summary with the bridge's errors and the far end's logs
    (slurm_fixtures.LOST_CONNECTS); the connection itself is tested against the plain sshd
    fixture everywhere else."""
    settings = slurm_cluster.transport_settings(tmp_path / "remote")
    for attempt in range(3):
        transport = SSHTransport(TransportConfig(**settings))
        try:
            transport.run(["true"])
            break
        except Unreachable as exc:
            transport.close()
            if attempt == 2:
                raise
            print(f"slurm_transport: connecting through the bridge failed ({exc}); again",
                  file=sys.stderr, flush=True)
            bridge = slurm_cluster.bridge
            LOST_CONNECTS.append(
                f"{exc}\n(bridge: {bridge.accepted if bridge else '?'} accepted, its last "
                f"errors: {bridge.errors[-5:] if bridge else '?'})\n"
                + _tail(slurm_cluster.root / "relay.log")
                + "\n" + _tail(slurm_cluster.root / "ssh" / "sshd.log", 30))
            time.sleep(0.5)
    yield transport
    transport.close()
