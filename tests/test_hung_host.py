"""A host whose commands hang (issue 13, item 6): a real `caseflow run` with two hosts, one
reached over a real sshd whose every remote command hangs on demand (a `sh` first on its
sessions' PATH that sleeps instead of running), the other local.

No remote call runs on the tick thread: the hung host delays only its own cases, and
SIGTERM ends the daemon within shutdown_timeout_seconds whatever the host does.
"""

import os
import signal
import time

import pytest

from harness import JOB, wait_for
from sshd import SSHServer, transport_settings
from test_daemon_process import Proc

HANGING_SH = """#!/bin/sh
# every command of this host's sessions goes through `sh`: while the flag exists, hang
if [ -e "$CASEFLOW_TEST_HANG" ]; then echo $$ >> "$CASEFLOW_TEST_HANG.seen"; exec sleep 3600; fi
exec /bin/sh "$@"
"""


@pytest.fixture
def hanging_sshd(tmp_path):
    flag = tmp_path / "hang"
    server = SSHServer(tmp_path / "sshd", env={"CASEFLOW_TEST_HANG": str(flag)})
    sh = server.bin / "sh"
    sh.write_text(HANGING_SH)
    sh.chmod(0o755)
    server.start()
    server.flag = flag
    yield server
    server.stop()
    seen = flag.with_name("hang.seen")  # the hung commands outlive their sessions
    for pid in (seen.read_text().split() if seen.exists() else []):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_hung_host_delays_only_its_own_cases_and_sigterm_still_ends_the_daemon(
        ws, hanging_sshd):
    for key in ("groups", "transport", "backend"):
        ws.settings.pop(key)
    (ws.remote / "far").mkdir()
    (ws.remote / "near").mkdir()
    job = {"kind": "direct", "command": JOB.replace("{ctl}", str(ws.ctl))}
    ws.write_config(shutdown_grace_seconds=5, shutdown_timeout_seconds=10, hosts={
        "far": {"transport": transport_settings(hanging_sshd, ws.remote / "far", name="far"),
                "backend": job, "groups": {"gpu_far": 1}},
        "near": {"transport": {"kind": "local", "root": "remote/near"}, "backend": job,
                 "groups": {"gpu_near": 1}}})
    daemon = Proc(ws)
    try:
        ws.drop_case("far1", group="gpu_far", hold="far1")
        ws.wait_state("far1", "running")
        hanging_sshd.flag.touch()  # from now on every command on "far" hangs
        seen = hanging_sshd.flag.with_name("hang.seen")
        wait_for(seen.exists, what="a command on the far host to hang")
        ws.drop_case("near1", group="gpu_near")
        ws.wait_state("near1", "success")  # detected, uploaded, run and polled meanwhile
        assert ws.case("far1").state == "running"  # waiting, not failed
        t0 = time.monotonic()
        daemon.p.send_signal(signal.SIGTERM)
        code = daemon.p.wait(timeout=120)
        took = time.monotonic() - t0
    finally:
        if daemon.p.poll() is None:
            daemon.p.kill()
            daemon.p.wait()
    print(f"\nSIGTERM to exit with a hung host: {took:.2f} s (shutdown_timeout_seconds: 10)")
    assert code == 0 and took < 10 + 5  # the timeout, and some slack for a loaded machine
    assert "stopped" in daemon.text() or "shutdown_timeout_seconds reached" in daemon.text()


def test_a_shutdown_timeout_shorter_than_the_grace_names_the_key(ws):
    from caseflow.config import load_config
    from caseflow.errors import ConfigError
    ws.write_config(shutdown_grace_seconds=30, shutdown_timeout_seconds=10)
    with pytest.raises(ConfigError, match=r"shutdown_timeout_seconds: must be at least "
                                          r"shutdown_grace_seconds \(30\)"):
        load_config(ws.config_path)
    ws.settings.pop("shutdown_timeout_seconds")
    ws.write_config(shutdown_grace_seconds=30)
    assert load_config(ws.config_path).shutdown_timeout_seconds == 60
