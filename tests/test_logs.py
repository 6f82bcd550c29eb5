"""`caseflow logs CASE [-f]` as a real process beside a real daemon: a job that writes lines
over time is followed as it writes them, on every backend (the direct runner over the local
transport and over the real sshd, real pueued 3.4.1 and 4.0.4, the session's real Slurm and
Grid Engine), until the case ends; a case that has not started is waited for; an ended case's
kept log; a log truncated or replaced under the reader; a host that stops answering for a
while; what a job prints to drive a terminal arrives as escapes. Every step waits on what the
process printed, never a fixed time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from harness import RunningCommand, wait_for
from pueue_daemon import PueueDaemon
from sshd import Relay, transport_settings

# The job: waits for <ctl>/release-<hold> if the case has a `hold` file; prints three lines,
# after each waiting for <ctl>/step-<case id>-<n> if the case has a `steps` file; then a line
# of what would drive a terminal (colour, a window title, a C1 CSI, a bidi override) and a
# line with a CR LF end and a lone CR.
JOB = r"""
if [ -e hold ]; then
  while [ ! -e "{ctl}/release-$(cat hold)" ]; do sleep 0.05; done
fi
for i in 1 2 3; do
  echo "line $i of case $CASEFLOW_CASE_ID"
  if [ -e steps ]; then
    while [ ! -e "{ctl}/step-$CASEFLOW_CASE_ID-$i" ]; do sleep 0.05; done
  fi
done
printf 'colour \033[31mred\033[0m title \033]0;pwned\007 csi \302\233 bidi \342\200\256x\n'
printf 'crlf end\r\nprogress 1\rprogress 2\n'
echo "last line"
"""
# a case name with what a shell would act on
HOSTILE = "it's a $(touch CANARY) `touch CANARY` case"
SHOWN_ESCAPES = (
    "colour \\x1b[31mred\\x1b[0m title \\x1b]0;pwned\\x07 csi \\x9b bidi \\u202ex\n"
    "crlf end\nprogress 1\nprogress 2\nlast line\n"
)


def Logs(config: Path, *args: str) -> RunningCommand:
    return RunningCommand(config, "logs", *args)


def step(ws, row, n: int) -> None:
    (ws.ctl / f"step-{row.id}-{n}").touch()


# -- every backend ----------------------------------------------------------------------------
BACKENDS = ["direct-local", "direct-ssh", "pueue-3.4.1", "pueue-4.0.4",
            pytest.param("slurm", marks=pytest.mark.slow),
            pytest.param("gridengine", marks=pytest.mark.slow)]


@pytest.fixture
def host(request, ws):
    """The workspace's GPU host as the backend of the test's parameter."""
    kind = request.param
    command = JOB.replace("{ctl}", str(ws.ctl))
    groups = {"gpu_a": {"slots": 2}, "gpu_b": {"slots": 1}}
    if kind == "direct-local":
        ws.write_config(groups=groups, backend={"kind": "direct", "command": command})
    elif kind == "direct-ssh":
        sshd = request.getfixturevalue("sshd")
        ws.write_config(groups=groups, transport=transport_settings(sshd, ws.remote),
                        backend={"kind": "direct", "command": command})
    elif kind.startswith("pueue-"):
        sshd = request.getfixturevalue("sshd")
        daemon = PueueDaemon(ws.root / "pueue", kind.split("-", 1)[1]).start()
        request.addfinalizer(daemon.close)
        ws.write_config(groups=groups, transport=transport_settings(sshd, ws.remote),
                        backend={"kind": "pueue", "command": command,
                                 "pueue": str(daemon.client)})
    elif kind == "slurm":
        cluster = request.getfixturevalue("slurm_cluster")
        ws.write_config(groups=groups, transport=cluster.transport_settings(ws.remote),
                        backend={"kind": "slurm", "command": command, "gpus_per_job": 0})
    else:
        cluster = request.getfixturevalue("gridengine_cluster")
        ws.write_config(groups=groups, transport=cluster.transport_settings(ws.remote),
                        backend={"kind": "gridengine", "command": command, "queue": "all.q"})
    return kind


@pytest.mark.parametrize("host", BACKENDS, indirect=True)
def test_logs_f_follows_a_running_job_as_it_writes_until_its_case_ends(ws, host):
    ws.start()
    ws.drop_case(HOSTILE, files={"steps": "", "data.txt": "x"})
    row = wait_for(lambda: ws.case(HOSTILE), what="the case to be detected")
    follow = Logs(ws.config_path, "-f", "--", HOSTILE)  # by its name, as an operator types it
    for n in (1, 2, 3):
        follow.wait_out(f"line {n} of case {row.id}\n")
        # each line came while the job waited to write the next: read as it was written
        assert f"line {n + 1}" not in follow.out and follow.proc.poll() is None
        step(ws, row, n)
    assert follow.end() == 0, follow.err
    ended = ws.case(HOSTILE)
    assert ended.state == "success"
    assert f"case {row.id} {HOSTILE} ended: success (" in follow.err, follow.err
    assert follow.out.endswith(SHOWN_ESCAPES), follow.out
    assert "\x1b" not in follow.out and "\x9b" not in follow.out and "\r" not in follow.out
    # the whole output, as the log kept at the end gives it again
    kept = Logs(ws.config_path, str(row.id))
    assert kept.end() == 0, kept.err
    assert kept.out == follow.out and kept.err == ""
    assert not list(ws.root.rglob("CANARY"))


# -- the direct runner: waiting, no -f, truncation, replacement --------------------------------
@pytest.fixture
def local(ws):
    # the remote root too has what a shell would act on
    ws.write_config(groups={"gpu_a": {"slots": 2}, "gpu_b": {"slots": 1}},
                    transport={"kind": "local", "root": "remote it's $(touch CANARY)"},
                    backend={"kind": "direct", "command": JOB.replace("{ctl}", str(ws.ctl))})
    ws.start()
    return ws


def test_a_case_that_has_not_started_is_waited_for_then_followed(local):
    ws = local
    ws.drop_case("holder", group="gpu_b", hold="h")  # holds gpu_b's only slot
    ws.wait_state("holder", "running")
    ws.drop_case("next", group="gpu_b", files={"steps": "", "data.txt": "x"})
    row = ws.wait_state("next", "queued")
    now = Logs(ws.config_path, "next")  # without -f: nothing to show yet
    assert now.end() == 1
    assert f"case {row.id} next has not started its job yet: it is queued" in now.err
    assert f"`caseflow logs -f {row.id}` waits for it" in now.err
    follow = Logs(ws.config_path, "-f", str(row.id))
    follow.wait_err(f"waiting for case {row.id} next to start its job: it is queued (")
    assert follow.out == ""
    ws.release("h")
    follow.wait_out(f"line 1 of case {row.id}\n")
    # meanwhile, without -f: what the job wrote so far, and that it still runs
    so_far = Logs(ws.config_path, str(row.id))
    assert so_far.end() == 0
    assert so_far.out == f"line 1 of case {row.id}\n"
    assert "the job is still running; `caseflow logs -f" in so_far.err
    for n in (1, 2, 3):
        step(ws, row, n)
    assert follow.end() == 0
    assert follow.err.count("waiting for case") == 1, follow.err  # said once: it did not change
    assert f"case {row.id} next ended: success" in follow.err
    assert not list(ws.root.rglob("CANARY"))


def test_a_log_that_gets_shorter_or_is_replaced_is_read_again_from_its_start(local):
    ws = local
    ws.drop_case("rotated", files={"steps": "", "data.txt": "x"})
    row = ws.wait_state("rotated", "running")
    follow = Logs(ws.config_path, "-f", "rotated")
    follow.wait_out(f"line 1 of case {row.id}\n")
    log = Path(ws.case("rotated").remote_path) / ".caseflow" / "job.log"
    os.truncate(log, 0)  # as `truncate -s 0` or logrotate's copytruncate
    follow.wait_err("the log got shorter; reading it from its start")
    step(ws, row, 1)  # the job writes on at its own offset: the start is NULs (as tail -f shows)
    follow.wait_out(f"line 2 of case {row.id}\n")
    assert "\\x00" * 10 in follow.out
    log.rename(log.with_name("job.log.1"))  # as logrotate's create
    log.write_text("a new log\n")
    follow.wait_err("the log was replaced; reading it from its start")
    follow.wait_out("a new log\n")
    follow.proc.send_signal(2)  # Ctrl-C
    assert follow.end() == 130
    step(ws, row, 2)  # the job's last steps: it ends (it was left waiting, a process a run)
    step(ws, row, 3)
    ws.wait_state("rotated", "success")


def test_an_ended_case_prints_its_kept_log_and_one_without_a_job_says_why(local):
    ws = local
    ws.drop_case("done")
    row = ws.wait_state("done", "success")
    kept = Logs(ws.config_path, "done")
    assert kept.end() == 0
    assert kept.out.startswith(f"line 1 of case {row.id}\nline 2") and kept.err == ""
    follow = Logs(ws.config_path, "-f", "done")  # nothing to follow: the log, how it ended
    assert follow.end() == 0
    assert follow.out == kept.out and f"case {row.id} done ended: success" in follow.err
    ws.drop_case("holder", group="gpu_b", hold="h2")
    ws.wait_state("holder", "running")
    ws.drop_case("never", group="gpu_b")
    never = ws.wait_state("never", "queued")
    ws.cli("cancel", "never", check=True)
    none = Logs(ws.config_path, str(never.id))
    assert none.end() == 1
    assert "ended (failure) and no log of its job was kept: it never started one" in none.err
    unknown = Logs(ws.config_path, "no-such-case")
    assert unknown.end() == 1 and "no case with id or name 'no-such-case'" in unknown.err
    ws.release("h2")


# -- a host that stops answering for a while -------------------------------------------------
def test_a_host_that_stops_answering_is_said_once_and_the_follow_goes_on(ws, sshd):
    """The command line reaches the host through a relay that turns it away for a while (the
    daemon has its own way in, and is not disturbed)."""
    ws.write_config(transport=transport_settings(sshd, ws.remote),
                    backend={"kind": "direct", "command": JOB.replace("{ctl}", str(ws.ctl))})
    relay = Relay(sshd.port)
    try:
        known = sshd.write_known_hosts(ws.root / "known_hosts_relay", port=relay.port)
        cli_config = ws.root / "cli.yaml"
        cli_config.write_text(yaml.safe_dump({
            **ws.settings, "transport": transport_settings(sshd, ws.remote, port=relay.port,
                                            known_hosts=str(known))}))
        ws.start()
        ws.drop_case("far", files={"steps": "", "data.txt": "x"})
        row = ws.wait_state("far", "running")
        follow = Logs(cli_config, "-f", "far")
        follow.wait_out(f"line 1 of case {row.id}\n")
        relay.refuse()
        relay.cut()
        follow.wait_err("cannot read the log on host testhost (")
        step(ws, row, 1)  # written while the host cannot be reached
        relay.accept()
        follow.wait_err("host testhost answers again")
        follow.wait_out(f"line 2 of case {row.id}\n")
        step(ws, row, 2)
        step(ws, row, 3)
        assert follow.end() == 0, follow.err
        assert follow.err.count("cannot read the log") == 1, follow.err
        assert follow.out.endswith(SHOWN_ESCAPES)
    finally:
        relay.close()
