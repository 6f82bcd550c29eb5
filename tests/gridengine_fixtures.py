"""The session's Grid Engine (tests/gridengine_cluster.py), a pytest plugin of tests/conftest.py,
shared by the backend contract suite and tests/gridengine, as slurm_fixtures.py is for Slurm."""

import pytest

from gridengine_cluster import GridEngineCluster

# all.q runs several jobs at once; one.q one at a time, so that a second job of it waits
QUEUES = {"all.q": 8, "one.q": 1}
_TIMES: dict[str, float] = {}


@pytest.fixture(scope="session")
def gridengine_cluster(tmp_path_factory):
    """One Grid Engine host (qmaster, execd, the queues of QUEUES) and an sshd beside it, in a
    network namespace; shared by the session."""
    cluster = GridEngineCluster(tmp_path_factory.mktemp("gridengine"), queues=QUEUES,
                                parallel_environments=("smp",))
    cluster.start()
    _TIMES["start"] = cluster.start_seconds
    yield cluster
    cluster.stop()


def pytest_runtest_logreport(report):
    if "gridengine" in report.nodeid.split("::")[0] or "[gridengine" in report.nodeid:
        _TIMES["tests"] = _TIMES.get("tests", 0.0) + report.duration
        if report.when == "call":
            _TIMES["count"] = _TIMES.get("count", 0) + 1


def pytest_terminal_summary(terminalreporter):
    """The cluster's start-up time and the Grid Engine tests' time, in the summary of every
    run that started the cluster."""
    if "start" in _TIMES:
        terminalreporter.write_line(
            f"grid engine (qmaster, execd, sshd in a network namespace) up in "
            f"{_TIMES['start']:.2f} s; {_TIMES.get('count', 0):.0f} Grid Engine tests took "
            f"{_TIMES.get('tests', 0.0):.1f} s in all")
