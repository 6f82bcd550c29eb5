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

import pytest

from caseflow.config import TransportConfig
from caseflow.transports.ssh import SSHTransport


@pytest.fixture
def slurm_transport(slurm_cluster, tmp_path):
    """caseflow's SSH transport to the cluster's host (remote root: tmp_path / "remote")."""
    transport = SSHTransport(TransportConfig(**slurm_cluster.transport_settings(
        tmp_path / "remote")))
    yield transport
    transport.close()
