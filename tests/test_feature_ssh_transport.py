"""Steps of features/ssh_transport.feature: the real sshd, a relay to cut or slow the link."""

from pathlib import Path

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403
from harness import wait_for  # noqa: E402
from sshd import Relay, SSHServer, transport_settings  # noqa: E402

scenarios("ssh_transport.feature")


class Host:
    """A GPU host of the scenario's own: an sshd behind a relay caseflow connects through."""

    def __init__(self, root: Path):
        self.server = SSHServer(root / "host").start()
        self.relay = Relay(self.server.port)
        self.known_hosts = self.server.write_known_hosts(root / "host" / "known_hosts_relay",
                                                         port=self.relay.port)

    def close(self):
        self.relay.close()
        self.server.stop()


@pytest.fixture
def host(ws):
    h = Host(ws.root)
    yield h
    h.close()


@given("the GPU host is reached over SSH")
def reached_over_ssh(ws, host):
    ws.write_config(transport=transport_settings(
        host.server, ws.remote, port=host.relay.port, known_hosts=str(host.known_hosts),
        reconnect_min_interval=0.5))


@given("the GPU host's key is not in the known hosts file")
def key_not_known(host):
    host.known_hosts.write_text("")


@given("the network to the GPU host is slow")
def slow_network(host):
    host.relay.rate = 2 * 1024 * 1024


@when("the SSH server goes down")
def server_down(host):
    host.server.stop()


@when("the SSH server comes back")
def server_back(host):
    host.server.start()


@when(parsers.parse('the connection drops while "{name}" is being uploaded'))
def drop_during_upload(ws, host, name):
    def uploading():
        for staging in ws.remote.glob(".staging-*"):
            data = staging / "data.bin"
            if data.exists() and data.stat().st_size > 1024 * 1024:
                return True
        return False
    wait_for(uploading, interval=0.01, what=f"the upload of {name!r} to be under way")
    host.relay.cut()


@when("caseflow has tried to reach the host and failed")
def tried_and_failed(ws):
    def failed_attempt():
        return any(r.attempts > 0 and r.last_error for r in ws.cases())
    wait_for(failed_attempt, what="a failed attempt to be recorded")


@given(parsers.parse("the GPU host allows {n:d} sessions on one connection"))
def few_sessions(host, n):
    host.server.stop()
    host.server.max_sessions = n
    host.server.start()


@given(parsers.parse("caseflow works on {workers:d} steps at a time with {slots:d} slots"))
def many_workers(ws, workers, slots):
    ws.write_config(workers=workers, groups={"gpu_a": {"slots": slots}})


@when(parsers.parse("{count:d} case folders are dropped into the inbox at once"),
      target_fixture="names")
def drop_at_once(ws, count):
    names = [f"many-{i:02d}" for i in range(count)]
    for name in names:
        ws.drop_case(name)
    return names


@when("these case folders are dropped into the inbox:", target_fixture="names")
def drop_many(ws, datatable):
    names = [row[0] for row in datatable[1:]]
    for name in names:
        ws.drop_case(name)
    return names


@then(parsers.parse('the case "{name}" still ends in success'))
def still_success(ws, name):
    ws.wait_state(name, "success")


@then("every one of them ends in success")
def all_success(ws, names):
    for name in names:
        row = ws.wait_state(name, "success")
        env = (Path(row.remote_path) / "job_env.txt").read_text()
        assert f"CASEFLOW_CASE_NAME={name}" in env


@then("no file named CANARY appeared anywhere")
def no_canary(ws):
    assert list(ws.root.rglob("CANARY")) == []
    assert not Path("/root/CANARY").exists() and not Path("CANARY").exists()


@then(parsers.parse('the job of "{name}" ran in its folder on the GPU host'))
def ran_remotely(ws, name):
    row = ws.case(name)
    assert row.host == "testhost"
    assert (Path(row.remote_path) / "output" / "result.txt").read_text() == \
        f"result of {row.id}\n"


@then("caseflow opened one SSH connection for all of it")
def one_connection(ws, host):
    assert ws.daemon.engine.transport.connects == 1
    assert host.relay.accepted == 1


@then("caseflow shows the host as paused because its key is not known")
def host_paused(ws):
    wait_for(lambda: ws.store.host_problems(), what="the host to be paused")
    out = ws.cli("status", check=True).stdout
    assert "host testhost: work PAUSED" in out and "is not in" in out


@then("nothing has been written on the GPU host")
def nothing_written(ws):
    assert list(ws.remote.iterdir()) == []


@then(parsers.parse('the case "{name}" is waiting, not failed'))
def waiting_not_failed(ws, name):
    row = ws.case(name)
    assert row.state not in ("failure", "not_found") and row.reason is None


@then(parsers.parse('only the finished folder of "{name}" is on the GPU host'))
def only_finished(ws, name):
    row = ws.case(name)
    assert [p.name for p in ws.remote.iterdir()] == [Path(row.remote_path).name]
