"""Steps of features/openssh_mfa.feature: a login node that asks for a key and a one-time
code (tests/sshd_mfa.py), `caseflow login` in a real pseudo-terminal."""

import os
import signal

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403
from caseflow.config import load_config  # noqa: E402
from caseflow.transports.openssh_master import Master  # noqa: E402
from harness import wait_for  # noqa: E402
from sshd import SSHServer  # noqa: E402
from sshd_mfa import LoginNode, openssh_settings, prompts_in, pty_login  # noqa: E402

scenarios("openssh_mfa.feature")

NOTIFY = """#!/bin/sh
printf '%s|%s\\n' "$CASEFLOW_HOST" "$CASEFLOW_PROBLEM" >> "{out}"
"""


@pytest.fixture
def node(ws):
    n = LoginNode(ws.root)
    yield n
    n.close(ws.config_path)


@given("the GPU host's login node asks for a key and a one-time code")
def login_node(node):
    assert node.server.logins() == 0


@given("caseflow reaches it with the openssh transport")
def over_openssh(ws, node):
    ws.write_config(transport=openssh_settings(node.server, ws.remote))


@given(parsers.parse('caseflow runs "{command}" when work on a host pauses'))
def pause_hook(ws, command):
    script = ws.root / command
    script.write_text(NOTIFY.format(out=ws.ctl / "notified"))
    script.chmod(0o755)
    ws.write_config(on_host_paused=[str(script)])


@given('the operator has logged in with "caseflow login"')
@when('the operator has logged in with "caseflow login"')
@when('the operator logs in again with "caseflow login"')
def logged_in(ws, node):
    rc, shown = pty_login(node.server, ws.config_path)
    assert rc == 0 and prompts_in(shown) == 1, shown


@when('the operator runs "caseflow login"', target_fixture="login")
def runs_login(ws, node):
    return pty_login(node.server, ws.config_path)


@when('the operator runs "caseflow check"', target_fixture="checked")
def runs_check(ws):
    return ws.cli("check")


@when(parsers.parse("{count:d} case folders are dropped into the inbox"),
      target_fixture="names")
def drop_many(ws, count):
    names = [f"case_{i:03d}" for i in range(count)]
    for name in names:
        ws.drop_case(name)
    return names


@when("the login connection goes away")
def connection_gone(ws):
    master = Master(load_config(ws.config_path).transport)
    os.kill(master.pid(), signal.SIGKILL)
    wait_for(lambda: master.pid() is None, what="the master connection to be gone")


@given("the login node's host key has changed")
def host_key_changed(ws, node):
    impostor = SSHServer(ws.root / "impostor")  # not started: only its own host key
    node.known_hosts.write_text(impostor.host_key_line(port=node.relay.port))


@then("every one of them ends in success")
def all_success(ws, names):
    for name in names:
        ws.wait_state(name, "success", timeout=120)


@then("the login node saw one login and one connection")
def one_login(node):
    assert node.server.logins() == 1
    assert node.relay.accepted == 1


@then(parsers.parse('caseflow shows the host as paused until someone runs "{command}"'))
def paused_for_login(ws, command):
    wait_for(lambda: f"needs login: {command}" in ws.cli("status").stdout,
             what="status to say the host needs a login")


@then(parsers.parse('"{command}" was run once, naming the host'))
def hook_ran(ws, command):
    out = ws.ctl / "notified"
    wait_for(out.exists, what=f"{command} to run")
    assert out.read_text() == "testhost|needs login: caseflow login testhost\n"


@then(parsers.parse('the case "{name}" is waiting, not failed'))
def waiting_not_failed(ws, name):
    wait_for(lambda: ws.case(name), what=f"case {name!r} to be detected")
    row = ws.case(name)
    assert row.state not in ("failure", "not_found", "success") and row.reason is None
    assert row.attempts == 0


@then("caseflow login fails with OpenSSH's warning that the host key has changed")
def login_refused(login):
    rc, shown = login
    assert rc == 1 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in shown, shown


@then("no one-time code was asked")
def no_code_asked(login, node):
    assert prompts_in(login[1]) == 0 and node.server.logins() == 0


@then("nothing has been written on the GPU host")
def nothing_written(ws):
    assert list(ws.remote.iterdir()) == []


@then(parsers.parse('it says to log in with "{command}"'))
def says_log_in(checked, command):
    assert checked.returncode == 1 and f"`{command}`" in checked.stdout, checked.stdout


@then("it says the login connection is up and every check passes")
def check_passes(checked):
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "master connection up" in checked.stdout and "all checks passed" in checked.stdout
