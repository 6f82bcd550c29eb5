"""Fixtures for the tests against a real one-host Grid Engine (tests/gridengine_cluster.py).

The session's cluster (`gridengine_cluster`, in tests/gridengine_fixtures.py, shared with the
backend contract suite) runs in a network namespace of its own; tests reach it like a GPU host,
over SSH (`ge.transport`), and read what Grid Engine says with its own commands inside the
namespace (`ge.jobs()`, `gridengine_cluster.run`); see ge_helper.py. Without the gridengine
packages it fails (it does not skip): .ci/system-deps installs them.
"""

import pytest
from ge_helper import GridEngine, connect


@pytest.fixture
def ge(gridengine_cluster, tmp_path):
    transport = connect(gridengine_cluster, tmp_path / "remote")
    helper = GridEngine(gridengine_cluster, transport, tmp_path / "remote")
    yield helper
    for folder in helper.root.glob("case */"):  # what a failed test left waiting
        (folder / "release").touch()
    helper.close()
    transport.close()
