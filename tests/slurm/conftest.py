"""Fixtures for the tests against a real one-node Slurm cluster (tests/slurm_cluster.py).

The cluster runs in a network namespace of its own; tests reach it like a GPU host, over SSH:

    def test_something(slurm_cluster, tmp_path):
        settings = slurm_cluster.transport_settings(tmp_path / "remote")  # `transport:` section
        transport = SSHTransport(TransportConfig(**settings))
        transport.run(["sbatch", "--parsable", "--wrap", "true"])

`slurm_cluster.run(argv)` runs a command inside the namespace directly (assertions only).
Without Slurm or munge installed the fixture fails (it does not skip): .ci/system-deps installs
them.
"""

import os

import pytest

from caseflow.config import TransportConfig
from caseflow.transports.ssh import SSHTransport
from slurm_cluster import SlurmCluster

MIN_JOB_AGE = 2  # Slurm's smallest: MinJobAge=1 is read as 2


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """One Slurm node with 2 fake GPUs and at least 4 CPUs (more CPUs than GPUs, so that GPU
    jobs wait for GPUs, not for CPUs), and an sshd beside it; shared by the session."""
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), min_job_age=MIN_JOB_AGE, gpus=2,
                           cpus=max(4, os.cpu_count() or 1))
    cluster.start()
    _TIMES["start"] = cluster.start_seconds
    yield cluster
    cluster.stop()


_TIMES: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if "slurm" in report.nodeid.split("::")[0]:
        _TIMES["tests"] = _TIMES.get("tests", 0.0) + report.duration
        if report.when == "call":
            _TIMES["count"] = _TIMES.get("count", 0) + 1


def pytest_terminal_summary(terminalreporter):
    """The cluster's start-up time and the Slurm tests' time, in the summary of every run that
    started the cluster (CI's too)."""
    if "start" in _TIMES:
        terminalreporter.write_line(
            f"slurm cluster (munge, slurmctld, slurmd, sshd in a network namespace) up in "
            f"{_TIMES['start']:.2f} s; {_TIMES.get('count', 0):.0f} Slurm tests took "
            f"{_TIMES.get('tests', 0.0):.1f} s in all")


@pytest.fixture
def slurm_transport(slurm_cluster, tmp_path):
    """caseflow's SSH transport to the cluster's host (remote root: tmp_path / "remote")."""
    transport = SSHTransport(TransportConfig(**slurm_cluster.transport_settings(
        tmp_path / "remote")))
    yield transport
    transport.close()
