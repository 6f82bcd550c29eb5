"""The `openssh` transport against a login node that asks for a key and a one-time code:
`caseflow login` in a real pseudo-terminal, a real `caseflow run` process, the real sshd
with PAM's TOTP module (tests/sshd_mfa.py), a relay that counts the TCP connections."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from caseflow.config import TransportConfig, load_config
from caseflow.transports.openssh import OpenSSHTransport
from caseflow.transports.openssh_master import Master
from harness import JOB, wait_for
from reliability.conftest import Daemon
from sshd import SSHServer
from sshd_mfa import LoginNode, open_master, openssh_settings, prompts_in, pty_login

pytestmark = pytest.mark.slow

HOOK = 'printf "%s|%s\\n" "$CASEFLOW_HOST" "$CASEFLOW_PROBLEM" >> "$0/paused"'


@pytest.fixture
def node(ws):
    n = LoginNode(ws.root)
    yield n
    n.close(ws.config_path)


@pytest.fixture
def daemons(ws):
    started: list[Daemon] = []

    def start() -> Daemon:
        d = Daemon(ws)
        started.append(d)
        d.wait_running()
        return d
    yield start
    for d in started:
        d.kill()


def _master(ws) -> Master:
    return Master(load_config(ws.config_path).transport)


def _configure(ws, node, **transport):
    ws.write_config(transport=openssh_settings(node.server, ws.remote, **transport),
                    groups={"gpu_a": {"slots": 4}}, workers=4,
                    backend={"kind": "direct", "command": JOB.replace("{ctl}", str(ws.ctl))},
                    on_host_paused=["sh", "-c", HOOK, str(ws.ctl)])


def test_one_login_carries_fifty_cases_and_a_lost_master_pauses_the_host(ws, node, daemons):
    _configure(ws, node)
    rc, shown = pty_login(node.server, ws.config_path)
    assert rc == 0 and prompts_in(shown) == 1, shown
    assert "logged in to testhost" in shown and node.server.logins() == 1
    d = daemons()
    for i in range(50):
        ws.drop_case(f"case_{i:02d}")
    wait_for(lambda: len(ws.cases()) == 50 and all(r.state == "success" for r in ws.cases()),
             timeout=300, what="50 cases to succeed")
    # one login, one TCP connection, no other attempt at all: every command and stream
    # went through the master
    assert node.server.logins() == 1 and node.relay.accepted == 1
    log = (node.server.root / "sshd.log").read_text()
    assert "Failed" not in log and "failure" not in log

    # the master goes away while jobs run and new cases arrive
    for i in range(3):
        ws.drop_case(f"held_{i}", hold="h")
    for i in range(3):
        ws.wait_state(f"held_{i}", "running")
    os.kill(_master(ws).pid(), signal.SIGKILL)
    for i in range(2):
        ws.drop_case(f"after_{i}")
    ws.release("h")
    wait_for(lambda: "needs login: caseflow login testhost" in ws.cli("status").stdout,
             what="status to say the host needs a login")
    wait_for(lambda: (ws.ctl / "paused").exists(), what="the on_host_paused hook")
    assert (ws.ctl / "paused").read_text() == "testhost|needs login: caseflow login testhost\n"
    assert "work paused: needs login: caseflow login testhost" in d.text()
    # nothing fails, nothing is charged an attempt, nothing tries to connect on its own
    wait_for(lambda: all(ws.case(f"after_{i}") for i in range(2)), what="the new cases")
    accepted = node.relay.accepted
    rows = ws.cases()
    assert [r.name for r in rows if r.state in ("failure", "not_found")] == []
    assert [(r.name, r.attempts, r.last_error) for r in rows if r.attempts] == []
    assert all(ws.case(f"after_{i}").state != "running" for i in range(2))

    rc, shown = pty_login(node.server, ws.config_path)
    assert rc == 0 and prompts_in(shown) == 1, shown
    wait_for(lambda: len(ws.cases()) == 55 and all(r.state == "success" for r in ws.cases()),
             timeout=120, what="the waiting cases to go on after the new login")
    assert node.server.logins() == 2 and node.relay.accepted == accepted + 1
    assert "failure" not in (node.server.root / "sshd.log").read_text()
    assert (ws.ctl / "paused").read_text().count("\n") == 1  # told once
    assert d.stop() == 0


def test_login_refuses_a_changed_host_key_before_any_code_is_asked(ws, node, daemons):
    other = SSHServer(ws.root / "impostor")  # only for its (different) host key
    line = other.host_key_line(port=node.relay.port)
    known = node.server.root / "known_hosts_relay"
    known.write_text(line)
    _configure(ws, node)
    d = daemons()
    ws.drop_case("private")
    rc, shown = pty_login(node.server, ws.config_path)
    assert rc == 1 and prompts_in(shown) == 0, shown
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in shown and "not logged in" in shown
    assert node.server.logins() == 0
    wait_for(lambda: "needs login" in ws.cli("status").stdout, what="the host to be paused")
    assert list(ws.remote.iterdir()) == [], "something reached the host"
    assert ws.case("private").state not in ("failure", "success")
    assert d.stop() == 0


def test_check_says_whether_a_master_is_up(ws, node):
    _configure(ws, node)
    out = ws.cli("check")
    assert out.returncode == 1
    assert "no master connection at" in out.stdout and "caseflow login testhost" in out.stdout
    assert node.relay.accepted == 0  # check connects to nothing on its own
    rc, shown = pty_login(node.server, ws.config_path)
    assert rc == 0, shown
    out = ws.cli("check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "master connection up (pid" in out.stdout and "tools:" in out.stdout
    assert "StrictHostKeyChecking=yes" in out.stdout
    assert node.server.logins() == 1


def test_a_killed_masters_socket_is_replaced_by_the_next_login(ws, node):
    _configure(ws, node)
    assert pty_login(node.server, ws.config_path)[0] == 0
    master = _master(ws)
    os.kill(master.pid(), signal.SIGKILL)
    wait_for(lambda: master.pid() is None, what="the master to be gone")
    assert os.path.exists(master.socket_path())  # left behind by the killed master
    rc, shown = pty_login(node.server, ws.config_path)
    assert rc == 0 and "logged in" in shown, shown
    assert master.pid() is not None


def test_channels_at_once_stay_within_max_sessions(tmp_path, mfa_sshd):
    """30 commands from 30 threads: never more than max_sessions at once on the host."""
    settings = openssh_settings(mfa_sshd, str(tmp_path), max_sessions=4,
                                control_path=str(tmp_path / "cm"))
    master = Master(TransportConfig(**settings))
    open_master(mfa_sshd, master)
    try:
        t = OpenSSHTransport(TransportConfig(**settings))
        trace = tmp_path / "trace"
        script = f'echo + >> {trace}; sleep 0.2; echo - >> {trace}'
        errors = []

        def one():
            try:
                assert t.run(["sh", "-c", script]).returncode == 0
            except Exception as exc:  # reported below
                errors.append(exc)
        threads = [threading.Thread(target=one) for _ in range(30)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        level = peak = 0
        for mark in trace.read_text().split():
            level += 1 if mark == "+" else -1
            peak = max(peak, level)
        assert peak == 4 and t.commands == 30
    finally:
        master.exit()


def test_master_daemon_opens_it_without_prompts_and_refuses_an_unknown_host_key(tmp_path,
                                                                                 sshd):
    """A host without one-time codes: caseflow opens the master itself (keys only)."""
    from sshd import transport_settings
    base = transport_settings(sshd, tmp_path / "remote")
    settings = {**base, "kind": "openssh", "master": "daemon",
                "control_path": str(tmp_path / "cm")}
    t = OpenSSHTransport(TransportConfig(**settings))
    try:
        assert t.run(["true"]).returncode == 0 and t.connects == 1
        assert t.run(["true"]).returncode == 0 and t.connects == 1
    finally:
        t.channels.master.exit()
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    t = OpenSSHTransport(TransportConfig(**{**settings, "known_hosts": str(empty)}))
    from caseflow.errors import HostError
    with pytest.raises(HostError, match="host key of 127.0.0.1 was refused"):
        t.run(["true"])
    assert t.channels.master.pid() is None


def test_run_once_never_runs_a_command_twice_when_the_master_dies_under_it(tmp_path, sshd):
    """A submit whose master ends while it runs is an error, not a second submit; a command
    that could not start (no master yet) does start once the master is open."""
    from sshd import transport_settings
    from caseflow.errors import TransientError
    settings = {**transport_settings(sshd, tmp_path / "remote"), "kind": "openssh",
                "master": "daemon", "control_path": str(tmp_path / "cm")}
    t = OpenSSHTransport(TransportConfig(**settings))
    runs = tmp_path / "runs"
    submit = ["sh", "-c", f'echo run >> {runs}; sleep 3']
    errors: list[Exception] = []
    thread = threading.Thread(target=lambda: _catch(errors, t.run_once, submit))
    thread.start()  # no master yet: it is opened, then the command runs (once)
    wait_for(lambda: runs.exists(), what="the command to start")
    os.kill(t.channels.master.pid(), signal.SIGKILL)
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], TransientError), errors
    assert "ended while a command ran" in str(errors[0])
    assert runs.read_text() == "run\n" and t.connects == 1
    assert t.run_once(["true"]).returncode == 0 and t.connects == 2
    t.channels.master.exit()


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # the test looks at it
        errors.append(exc)


@pytest.mark.parametrize("size", [8 << 20, 80 << 20])  # one tar stream; byte ranges
def test_a_master_lost_during_an_upload_needs_a_login_and_leaves_no_case_behind(
        ws, node, size):
    from caseflow import casefolder
    from caseflow.transports.openssh import NeedsLogin
    _configure(ws, node)
    assert pty_login(node.server, ws.config_path)[0] == 0
    t = OpenSSHTransport(load_config(ws.config_path).transport)
    case = ws.root / "big"
    case.mkdir()
    (case / "scan.bin").write_bytes(os.urandom(size))
    node.relay.rate = 4 * 1024 * 1024
    errors: list[Exception] = []
    target = ws.remote / "1-big"
    thread = threading.Thread(target=lambda: _catch(
        errors, t.upload_dir, case, str(target), casefolder.scan(case)))
    thread.start()
    staged = ws.remote / ".staging-1-big" / "scan.bin"
    wait_for(lambda: staged.exists() and staged.stat().st_size > 1 << 20, interval=0.01,
             what="the upload to be under way")
    os.kill(t.channels.master.pid(), signal.SIGKILL)
    thread.join(timeout=60)
    assert len(errors) == 1 and isinstance(errors[0], NeedsLogin), errors
    assert str(errors[0]) == "needs login: caseflow login testhost"
    assert not target.exists()
