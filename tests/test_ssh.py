"""The ssh transport against a real OpenSSH server: keys, config, connections, outages, jobs."""

import logging
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from caseflow import casefolder
from caseflow.config import TransportConfig, load_config
from caseflow.errors import ConfigError, HostError, TransientError
from caseflow.transports.ssh import SSHTransport
from caseflow.transports.ssh_channels import start_command
from caseflow.transports.ssh_connection import transport_of
from caseflow.transports.local import local_manifest
from harness import wait_for
from sshd import Relay, SSHServer, transport_settings


def make(sshd, root, **extra) -> SSHTransport:
    return SSHTransport(TransportConfig(**transport_settings(sshd, root, **extra)),
                        sleep=lambda s: None)


@pytest.fixture
def relay(sshd):
    r = Relay(sshd.port)
    yield r
    r.close()


# -- host keys ---------------------------------------------------------------------------------
def test_an_unknown_host_key_is_refused_before_anything_is_sent(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = make(sshd, tmp_path / "remote", known_hosts=str(empty))
    with pytest.raises(HostError) as err:
        t.run(["mkdir", "-p", str(tmp_path / "remote" / "should-not-exist")])
    assert f"[127.0.0.1]:{sshd.port}" in str(err.value) and str(empty) in str(err.value)
    assert "accept_new_host_keys" in str(err.value)
    assert not (tmp_path / "remote").exists()
    assert empty.read_text() == ""


def test_a_changed_host_key_is_refused_even_with_accept_new(sshd, tmp_path):
    other = SSHServer(tmp_path / "impostor")  # a different host key, same address
    known = other.write_known_hosts(tmp_path / "known_hosts", port=sshd.port)
    t = make(sshd, tmp_path / "remote", known_hosts=str(known), accept_new_host_keys=True)
    with pytest.raises(HostError, match="CHANGED") as err:
        t.run(["true"])
    assert not (tmp_path / "remote").exists()
    # what to do, as OpenSSH says it: the file, the line, the command
    name = f"[127.0.0.1]:{sshd.port}"
    lines = [i for i, line in enumerate(known.read_text().splitlines(), 1) if name in line]
    assert lines and f"line {lines[0]} of {known}" in str(err.value), err.value
    assert f"ssh-keygen -f {known} -R '{name}'" in str(err.value), err.value


def test_accept_new_host_keys_trusts_on_first_use_and_records_the_key(sshd, tmp_path):
    known = tmp_path / "fresh" / "known_hosts"
    t = make(sshd, tmp_path / "remote", known_hosts=str(known), accept_new_host_keys=True)
    assert t.run(["true"]).returncode == 0
    assert known.read_text().split()[:2] == sshd.host_key_line().split()[:2]
    t.close()
    t2 = make(sshd, tmp_path / "remote", known_hosts=str(known))  # now known: no flag needed
    assert t2.run(["true"]).returncode == 0
    t2.close()


def test_a_wrong_key_is_a_host_problem_not_a_case_failure(sshd, tmp_path):
    stranger = tmp_path / "stranger"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {stranger}")
    t = make(sshd, tmp_path / "remote", identity_file=str(stranger))
    with pytest.raises(HostError, match="authentication failed"):
        t.run(["true"])


def test_a_connection_made_ahead_is_the_one_the_next_call_uses(sshd, tmp_path):
    t = make(sshd, tmp_path / "remote")
    t.connect_ahead()  # as the upload step does before it scans the case
    wait_for(lambda: t.connects == 1, what="the connection made ahead")
    case = tmp_path / "case"
    case.mkdir()
    (case / "a.txt").write_text("a")
    target = tmp_path / "remote" / "1-case"
    (tmp_path / "remote").mkdir()
    t.connect_ahead()  # connected (or connecting): nothing more
    assert t.upload_dir(case, str(target), casefolder.scan(case)) is True
    assert (target / "a.txt").read_text() == "a"
    assert t.connects == 1
    t.close()


def test_a_host_key_problem_found_ahead_is_reported_as_itself_by_the_next_call(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = make(sshd, tmp_path / "remote", known_hosts=str(empty), reconnect_min_interval=60)
    t.connect_ahead()
    wait_for(lambda: t.connects == 1, what="the connection made ahead")
    with pytest.raises(HostError, match="accept_new_host_keys"):  # not "unreachable"
        t.run(["true"])
    assert t.connects == 1  # the attempt made ahead, reported once by the call after it
    # then, within the reconnect interval, the same host problem again without a new attempt
    # (as "unreachable" it was charged to a case and hid the host key's problem: issue 27)
    with pytest.raises(HostError, match="accept_new_host_keys") as again:
        t.run(["true"])
    assert again.value.kind == "host_key" and t.connects == 1


def test_a_refused_connection_found_ahead_fails_the_next_call_without_a_second_try(
        tmp_path, monkeypatch):
    from caseflow.transports import ssh_connection
    tries = []
    connect = ssh_connection.tcp_connection
    monkeypatch.setattr(ssh_connection, "tcp_connection",
                        lambda *a: tries.append(a) or connect(*a))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once it is closed
    cfg = {"kind": "ssh", "name": "nowhere", "host": "127.0.0.1", "port": port,
           "root": str(tmp_path / "remote"), "connect_timeout": 10,
           "reconnect_min_interval": 60, "known_hosts": str(tmp_path / "known_hosts")}
    t = SSHTransport(TransportConfig(**cfg), sleep=lambda s: None)
    t.connect_ahead()
    wait_for(lambda: not any(th.name == "caseflow-connect" for th in threading.enumerate()),
             what="the connection made ahead to fail")
    assert len(tries) == 1
    with pytest.raises(TransientError, match="refused"):
        t.run(["true"])
    assert len(tries) == 1  # its failure, reported by the call after it (and its retries)


# -- OpenSSH client config -----------------------------------------------------------------------
def test_a_host_alias_from_ssh_config(sshd, tmp_path):
    conf = tmp_path / "ssh_config"
    conf.write_text(f"Host gpu-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
                    f"  User {sshd.user}\n  IdentityFile {sshd.client_key}\n"
                    f"  UserKnownHostsFile {sshd.known_hosts}\n")
    cfg = TransportConfig(kind="ssh", name="gpu-box", root=str(tmp_path), host="gpu-box",
                          ssh_config=str(conf))
    t = SSHTransport(cfg)
    assert t.run(["printf", "%s", "via alias"]).stdout == "via alias"
    assert (t.channels.conn.endpoint.hostname, t.channels.conn.endpoint.port) == ("127.0.0.1", sshd.port)
    t.close()


def test_proxyjump_through_one_bastion(sshd, tmp_path):
    conf = tmp_path / "ssh_config"
    conf.write_text(f"Host bastion\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
                    f"  IdentityFile {sshd.client_key}\n"
                    f"Host inner\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
                    f"  IdentityFile {sshd.client_key}\n  ProxyJump bastion\n")
    cfg = TransportConfig(kind="ssh", name="inner", root=str(tmp_path), host="inner",
                          ssh_config=str(conf), known_hosts=str(sshd.known_hosts),
                          user=sshd.user)
    t = SSHTransport(cfg)
    assert t.run(["echo", "jumped"]).stdout == "jumped\n"
    assert t.channels.conn._jump is not None and t.connects == 2
    t.close()


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:  # the listing's own fd, closed meanwhile
            pass
    return count


def _live_ssh_transports() -> int:
    import paramiko
    return sum(1 for t in threading.enumerate() if isinstance(t, paramiko.Transport) and
               t.is_active())


@pytest.mark.parametrize("refusing", ["bastion", "inner"])
def test_a_failed_jump_host_connection_leaves_no_client_open(sshd, tmp_path, refusing):
    """The bastion (or the host behind it) refuses the key: every attempt fails, and none
    leaves a client (a paramiko transport thread and its socket) behind."""
    stranger = tmp_path / "stranger"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {stranger}")
    keys = {name: stranger if name == refusing else sshd.client_key
            for name in ("bastion", "inner")}
    conf = tmp_path / "ssh_config"
    conf.write_text(f"Host bastion\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
                    f"  IdentityFile {keys['bastion']}\n"
                    f"Host inner\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
                    f"  IdentityFile {keys['inner']}\n  ProxyJump bastion\n")
    cfg = TransportConfig(kind="ssh", name="inner", root=str(tmp_path), host="inner",
                          ssh_config=str(conf), known_hosts=str(sshd.known_hosts),
                          user=sshd.user, reconnect_min_interval=0)
    t = SSHTransport(cfg, sleep=lambda s: None)
    sockets, transports = _open_sockets(), _live_ssh_transports()
    for _ in range(5):
        with pytest.raises(HostError, match="authentication failed"):
            t.run(["true"])
    assert t.connects == (5 if refusing == "bastion" else 10)  # each attempt was made
    assert (_open_sockets(), _live_ssh_transports()) == (sockets, transports)
    t.close()


def test_passwords_are_refused_in_the_config(ssh_ws, sshd):
    settings = dict(ssh_ws.settings["transport"], password="hunter2")
    ssh_ws.write_config(transport=settings)
    with pytest.raises(ConfigError, match="transport.password: passwords are not accepted"):
        load_config(ssh_ws.config_path)


# -- one long-lived connection, retries, outages --------------------------------------------------
def test_one_connection_serves_many_commands(sshd, tmp_path):
    t = make(sshd, tmp_path)
    for i in range(20):
        assert t.run(["echo", str(i)]).stdout == f"{i}\n"
    assert (t.connects, t.commands) == (1, 20)
    t.close()


def _at_once(t, tmp_path, threads: int, seconds: float = 0.2) -> tuple[list, int]:
    """`threads` commands at once, each marking its start and end in a trace on the host:
    (the errors, the most that ran at the same time)."""
    trace = tmp_path / "trace"
    trace.write_text("")
    script = f"echo + >> {trace}; sleep {seconds}; echo - >> {trace}"
    errors: list = []

    def one():
        try:
            assert t.run(["sh", "-c", script]).returncode == 0
        except Exception as exc:  # reported by the caller
            errors.append(exc)
    workers = [threading.Thread(target=one) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    level = peak = 0
    for mark in trace.read_text().split():
        level += 1 if mark == "+" else -1
        peak = max(peak, level)
    return errors, peak


def _all_sessions_given_back(t) -> bool:
    taken = 0
    while t.channels.sessions.acquire(blocking=False):
        taken += 1
    for _ in range(taken):
        t.channels.sessions.release()
    return taken == t.cfg.max_sessions


def test_channels_at_once_stay_within_max_sessions(sshd, tmp_path, caplog):
    """30 commands from 30 threads on one connection: never more than max_sessions at once,
    and none of them refused by the host (which would have dropped the connection)."""
    caplog.set_level(logging.DEBUG, "caseflow.ssh")
    t = make(sshd, tmp_path, max_sessions=4)
    errors, peak = _at_once(t, tmp_path, 30)
    assert errors == [] and 1 <= peak <= 4, (errors, peak)
    assert t.connects == 1
    assert "refused a new session" not in caplog.text
    assert _all_sessions_given_back(t)
    t.close()


def test_a_host_with_fewer_sessions_than_configured_is_waited_for_on_the_same_connection(
        tmp_path, caplog):
    """The host's MaxSessions (3) is below transport.max_sessions (10): it refuses channels
    ("open failed: Connect failed"), and a refused channel is asked for again as others
    close, on the same connection. Dropping the connection at a refusal (as any other SSH
    error does) broke the commands running on it."""
    caplog.set_level(logging.DEBUG, "caseflow.ssh")
    server = SSHServer(tmp_path / "sshd", max_sessions=3).start()
    try:
        t = make(server, tmp_path)
        errors, peak = _at_once(t, tmp_path, 24)
        assert errors == [] and peak <= 3, (errors, peak)
        assert t.connects == 1
        assert "testhost refused a new session" in caplog.text  # the host did refuse some
        assert "open FAILED" not in caplog.text  # and paramiko's ERROR of it is not shown
        assert _all_sessions_given_back(t)
        t.close()
    finally:
        server.stop()


def test_a_failed_command_gives_its_session_back(sshd, tmp_path):
    t = make(sshd, tmp_path, max_sessions=2, command_timeout=1)
    for _ in range(3):
        with pytest.raises(TransientError, match="did not finish within 1 s"):
            t.run(["sleep", "30"])
        assert t.run(["sh", "-c", "exit 3"]).returncode == 3
    assert _all_sessions_given_back(t)
    assert t.run(["echo", "ok"]).stdout == "ok\n"
    t.close()


def test_a_dropped_connection_is_reopened_within_the_short_retries(sshd, relay, tmp_path):
    sshd.write_known_hosts(tmp_path / "kh", port=relay.port)
    t = make(sshd, tmp_path, port=relay.port, known_hosts=str(tmp_path / "kh"),
             reconnect_min_interval=0)
    assert t.run(["true"]).returncode == 0
    relay.cut()
    assert t.run(["echo", "again"]).stdout == "again\n"
    assert t.connects == 2
    t.close()


def test_a_connection_lost_an_instant_ago_is_replaced_for_a_step_not_retried(
        sshd, relay, tmp_path, monkeypatch):
    """paramiko wakes the channels of a lost connection before it marks the connection
    closed; in that instant it looks open. An upload started then (its steps are not
    retried) opens its channel on a new connection instead of failing on the dead one
    (seen in CI: a resumed upload right after a cut failed with EOFError)."""
    sshd.write_known_hosts(tmp_path / "kh", port=relay.port)
    (tmp_path / "remote").mkdir()
    t = make(sshd, tmp_path / "remote", port=relay.port, known_hosts=str(tmp_path / "kh"),
             reconnect_min_interval=0)
    assert t.run(["true"]).returncode == 0
    old = transport_of(t.channels.conn.client())
    relay.cut()
    wait_for(lambda: not old.is_active(), what="paramiko to see the cut")
    monkeypatch.setattr(old, "active", True)  # as in the instant before it did
    case = tmp_path / "case"
    case.mkdir()
    (case / "a.txt").write_text("a\n")
    m = casefolder.scan(case)
    target = tmp_path / "remote" / "1-case"
    assert t.upload_dir(case, str(target), m) is True
    assert local_manifest(target) == m.as_set()
    assert t.connects == 2
    t.close()


def test_during_an_outage_reconnects_are_spaced_out(sshd, relay, tmp_path):
    sshd.write_known_hosts(tmp_path / "kh", port=relay.port)
    t = SSHTransport(TransportConfig(**transport_settings(
        sshd, tmp_path, port=relay.port, known_hosts=str(tmp_path / "kh"),
        reconnect_min_interval=3600)), sleep=lambda s: None)
    assert t.run(["true"]).returncode == 0
    relay.refuse()
    before = relay.accepted
    for _ in range(10):
        with pytest.raises(TransientError):
            t.run(["true"])
    # one attempt to reconnect, then none until the interval has passed
    assert relay.accepted - before == 1
    t.channels.conn._failed_at -= 3600  # the interval passes
    relay.accept()
    assert t.run(["echo", "back"]).stdout == "back\n"
    t.close()


def test_a_command_not_safe_to_repeat_runs_once_when_its_reply_is_lost(sshd, relay, tmp_path):
    """run() repeats a command after a lost connection (fine for a read); run_once() never
    does: the connection is cut while the command runs, it is not sent again."""
    sshd.write_known_hosts(tmp_path / "kh", port=relay.port)
    t = make(sshd, tmp_path, port=relay.port, known_hosts=str(tmp_path / "kh"),
             reconnect_min_interval=0)
    runs, started, release = tmp_path / "runs", tmp_path / "started", tmp_path / "release"
    # the first run waits (until released) after it has done its part: its reply is lost
    script = ('echo run >> "$1"; if [ "$(wc -l < "$1")" -eq 1 ]; then : > "$2"; '
              'while [ ! -e "$3" ]; do sleep 0.05; done; fi; echo done')
    argv = ["sh", "-c", script, "caseflow-test", str(runs), str(started), str(release)]

    def cut_once_started():
        wait_for(started.exists, what="the command to start")
        relay.cut()
    try:
        for method, lines in ((t.run_once, 1), (t.run, 2)):
            runs.unlink(missing_ok=True)
            started.unlink(missing_ok=True)
            cutter = threading.Thread(target=cut_once_started)
            cutter.start()
            if method == t.run_once:
                with pytest.raises(TransientError):
                    method(argv)
            else:
                assert method(argv).stdout == "done\n"  # the second run answered
            cutter.join()
            assert runs.read_text() == "run\n" * lines, method
    finally:
        release.touch()
    assert t.run_once(["echo", "again"]).stdout == "again\n"  # it reconnects, as run() does
    t.close()


def test_a_connection_cut_during_an_upload_fails_transiently_then_succeeds(sshd, relay, tmp_path):
    sshd.write_known_hosts(tmp_path / "kh", port=relay.port)
    t = make(sshd, tmp_path / "remote", port=relay.port, known_hosts=str(tmp_path / "kh"),
             reconnect_min_interval=0)
    (tmp_path / "remote").mkdir()
    case = tmp_path / "case"
    case.mkdir()
    for i in range(40):
        (case / f"f{i:02d}.bin").write_bytes(os.urandom(256 * 1024))
    m = casefolder.scan(case)
    cut = []

    def progress(sent, total):
        if not cut and sent > total // 3:
            cut.append(sent)
            relay.cut()

    target = str(tmp_path / "remote" / "1-case")
    with pytest.raises(TransientError):
        t.upload_dir(case, target, m, progress=progress)
    assert not Path(target).exists()  # a half-done upload is never in place
    assert t.upload_dir(case, target, m) is True
    assert local_manifest(Path(target)) == m.as_set()
    assert [p.name for p in (tmp_path / "remote").iterdir()] == ["1-case"]
    t.close()


def test_large_files_go_by_sftp_and_are_checked(sshd, tmp_path):
    t = make(sshd, tmp_path / "remote", large_file_bytes=100_000, verify="checksum")
    (tmp_path / "remote").mkdir()
    case = tmp_path / "case"
    case.mkdir()
    big = os.urandom(3_000_000)
    (case / "big.raw").write_bytes(big)
    (case / "small.txt").write_text("small")
    os.chmod(case / "big.raw", 0o640)
    sent = []
    assert t.upload_dir(case, str(tmp_path / "remote" / "c"), casefolder.scan(case),
                        progress=lambda s, total: sent.append(s)) is True
    assert (tmp_path / "remote" / "c" / "big.raw").read_bytes() == big
    assert os.stat(tmp_path / "remote" / "c" / "big.raw").st_mode & 0o777 == 0o640
    assert sent == sorted(sent) and sent[-1] == 3_000_005
    t.close()


# -- the engine over ssh ----------------------------------------------------------------------------
def test_the_sample_flow_over_ssh_with_the_direct_runner(ssh_ws):
    ssh_ws.start()
    ssh_ws.drop_case("over-ssh", group="gpu_b")
    row = ssh_ws.wait_state("over-ssh", "success")
    assert row.host == "testhost"
    env = (Path(row.remote_path) / "job_env.txt").read_text()
    assert "CASEFLOW_GPU_GROUP=gpu_b" in env and "CASEFLOW_CASE_NAME=over-ssh" in env
    assert (Path(row.remote_path) / "output" / "result.txt").exists()


def test_polling_many_running_cases_is_one_command_per_tick(ssh_ws):
    from caseflow.core.engine import Engine
    ssh_ws.write_config(groups={"gpu_a": {"slots": 8}}, workers=4)
    ssh_ws.start()
    for i in range(8):
        ssh_ws.drop_case(f"held{i}", hold="later")
    for i in range(8):
        ssh_ws.wait_state(f"held{i}", "running")
    ssh_ws.stop()
    engine = Engine(ssh_ws.config())
    engine.start(workers=False)
    try:
        rows = ssh_ws.store.cases(["running"])
        assert len(rows) == 8
        engine.poll(engine.first_host, rows)
        t = engine.transport
        before = (t.connects, t.commands)
        engine.poll(engine.first_host, rows)
        assert (t.connects - before[0], t.commands - before[1]) == (0, 1)
    finally:
        ssh_ws.release("later")
        engine.shutdown()


def test_an_unknown_host_key_pauses_the_host_and_fails_no_case(ssh_ws, sshd, tmp_path):
    known = tmp_path / "known_hosts_to_fix"
    known.write_text("")
    ssh_ws.write_config(transport={**ssh_ws.settings["transport"], "known_hosts": str(known)})
    ssh_ws.start()
    ssh_ws.drop_case("waits")
    # the probe at the start records it (before any case); the case then waits holding its
    # slot, having tried once more after retry.max_seconds
    wait_for(lambda: ssh_ws.store.host_problems(), what="the host problem to be recorded")
    row = wait_for(lambda: (r := ssh_ws.case("waits")) and r.state == "gpu_locked" and r,
                   what="the case to take its slot and wait")
    assert row.reason is None and row.attempts == 0
    status = ssh_ws.cli("status", check=True).stdout
    assert "host testhost: work PAUSED" in status and "is not in" in status
    sshd.write_known_hosts(known)  # the operator adds the key; work resumes by itself
    ssh_ws.wait_state("waits", "success")
    assert ssh_ws.store.host_problems() == []


def test_check_reports_a_usable_host(ssh_ws):
    proc = ssh_ws.cli("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "host key verified" in proc.stdout and "exists and is writable" in proc.stdout
    assert "tools: tar, find, sha256sum" in proc.stdout


def test_check_reports_an_unknown_host_key(ssh_ws, tmp_path):
    empty = tmp_path / "kh"
    empty.write_text("")
    ssh_ws.write_config(transport={**ssh_ws.settings["transport"], "known_hosts": str(empty)})
    proc = ssh_ws.cli("check")
    assert proc.returncode == 1
    assert "FAIL  cannot connect" in proc.stdout and "is not in" in proc.stdout


def test_keys_from_an_ssh_agent(sshd, tmp_path, monkeypatch):
    import subprocess
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, what="ssh-agent to listen")
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(sshd.client_key)], env=env, check=True,
                       stderr=subprocess.DEVNULL)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("HOME", str(tmp_path))  # no default key files to fall back on
        settings = transport_settings(sshd, tmp_path)
        del settings["identity_file"]
        t = SSHTransport(TransportConfig(**settings))
        assert t.run(["echo", "agent"]).stdout == "agent\n"
        t.close()
    finally:
        agent.terminate()
        agent.wait()


def test_a_command_started_without_waiting_gets_its_stdin_and_a_refusal_closes_the_channel(
        sshd, tmp_path):
    """start_command does not wait for the server's answer before the data (a round trip
    less per stream); what is sent right after it reaches the command. A request the server
    refuses (here a second command on the same channel) closes the channel: sending fails
    and there is no exit status, as when the connection is lost, never a hang."""
    t = SSHTransport(TransportConfig(**transport_settings(sshd, tmp_path)))
    chan = t.channels.session()
    start_command(chan, "cat > " + str(tmp_path / "got"))
    chan.sendall(b"sent at once\n")
    chan.shutdown_write()
    assert chan.recv_exit_status() == 0
    chan.close()
    assert (tmp_path / "got").read_text() == "sent at once\n"
    chan = t.channels.session()
    start_command(chan, "sleep 30")
    start_command(chan, "true")  # refused: the session runs a command already
    deadline = time.monotonic() + 30
    while not chan.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert chan.closed
    with pytest.raises(OSError):
        chan.sendall(b"x")
    chan.close()
    t.close()


def test_the_connection_acknowledges_at_once(sshd, tmp_path):
    """sshd's small messages right after the login wait for the client's ACK (Nagle); the
    client's socket sends it at once after every read (and has TCP_NODELAY itself)."""
    t = SSHTransport(TransportConfig(**transport_settings(sshd, tmp_path)))
    sock = transport_of(t.channels.conn.client()).sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert sock.recv.__qualname__ == "_QuickAckSocket.recv"
    assert t.run(["echo", "ok"]).stdout == "ok\n"
    t.close()


def test_the_known_hosts_lines_of_a_host_are_found_plain_and_hashed(tmp_path):
    import paramiko

    from caseflow.transports.ssh_connection import known_hosts_lines
    name = "[10.0.0.7]:2222"
    known = tmp_path / "known_hosts"
    known.write_text("# a comment [10.0.0.7]:2222\n"
                     "other.example ssh-ed25519 AAAA\n"
                     f"{paramiko.HostKeys.hash_host(name)} ssh-ed25519 AAAA\n"
                     f"gpu1,{name} ssh-rsa AAAA\n"
                     f"@cert-authority {name} ssh-ed25519 AAAA\n")
    assert known_hosts_lines(str(known), name) == [3, 4, 5]
    assert known_hosts_lines(str(known), "[10.0.0.7]:22") == []
    assert known_hosts_lines(str(tmp_path / "absent"), name) == []
