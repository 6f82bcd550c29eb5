import logging

import pytest

import pueue_daemon
from harness import Workspace
from sshd import SSHServer, transport_settings
from sshd_mfa import MFAServer

# the session's Slurm cluster and Grid Engine, each shared by its tests and the backend contract
# suite
pytest_plugins = ["slurm_fixtures", "gridengine_fixtures"]


@pytest.fixture
def ws(tmp_path):
    """A workspace with its own inbox, database and local "remote" folder."""
    workspace = Workspace(tmp_path)
    yield workspace
    workspace.close()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 at a free port, shared by the session."""
    server = SSHServer(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mfa_sshd(tmp_path_factory):
    """A real OpenSSH server that asks for the client key and a one-time code (PAM)."""
    server = MFAServer(tmp_path_factory.mktemp("mfa")).start()
    yield server
    server.close()


@pytest.fixture
def ssh_ws(ws, sshd):
    """A workspace whose transport is the real sshd (the remote root is ws.remote)."""
    ws.write_config(transport=transport_settings(sshd, ws.remote))
    return ws


@pytest.fixture(autouse=True)
def _caseflow_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="caseflow")
    logging.getLogger("transitions").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.WARNING)


def pytest_terminal_summary(terminalreporter):
    pueue_daemon.summary(terminalreporter)  # how long the real pueued took to start
