import logging

import pytest

from harness import Workspace


@pytest.fixture
def ws(tmp_path):
    """A workspace with its own inbox, database and local "remote" folder."""
    workspace = Workspace(tmp_path)
    yield workspace
    workspace.close()


@pytest.fixture(autouse=True)
def _caseflow_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="caseflow")
    logging.getLogger("transitions").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
