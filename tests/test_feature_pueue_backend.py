"""Steps of features/pueue_backend.feature: caseflow over the real sshd to the pueue emulator."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403
from bdd_steps import shown  # noqa: E402
from harness import DEADLINE, JOB, wait_for  # noqa: E402
from pueue_emulator import install, run as emulator, stop_tasks  # noqa: E402
from sshd import SSHServer, transport_settings  # noqa: E402

scenarios("pueue_backend.feature")

# `pueue` on the host: the emulator, behind a wrapper with two switches for the scenarios:
#   <state>/answer-<command>  print this file instead of running <command>
#   <state>/kill-after-add    kill -9 the pid in it right after a successful `pueue add`
WRAPPER = r"""#!/bin/sh
state={state}
if [ -f "$state/answer-$1" ]; then cat "$state/answer-$1"; exit 0; fi
out=$({inner} "$@"); rc=$?
printf '%s\n' "$out"
if [ "$1" = add ] && [ $rc = 0 ] && [ -f "$state/kill-after-add" ]; then
  kill -9 "$(cat "$state/kill-after-add")"; rm -f "$state/kill-after-add"
fi
exit $rc
"""


class PueueHost:
    def __init__(self, root: Path, version: str):
        self.server = SSHServer(root / "pueuehost").start()
        self.state = install(self.server.bin, state_dir=root / "pueue-state", version=version)
        inner = self.server.bin / "pueue-inner"
        (self.server.bin / "pueue").rename(inner)
        wrapper = self.server.bin / "pueue"
        wrapper.write_text(WRAPPER.replace("{state}", str(self.state))
                           .replace("{inner}", str(inner)))
        wrapper.chmod(0o755)

    def tasks(self) -> dict:
        return json.loads(emulator(self.state, "status", "--json").stdout)["tasks"]

    def close(self):
        stop_tasks(self.state)
        self.server.stop()


@pytest.fixture
def pueue_host(ws):
    hosts = []
    yield hosts
    for h in hosts:
        h.close()


@pytest.fixture
def daemon_procs(ws):
    procs = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


@given(parsers.parse("the GPU host runs pueue {version}"))
def host_runs_pueue(ws, pueue_host, version):
    host = PueueHost(ws.root, version)
    pueue_host.append(host)
    ws.write_config(transport=transport_settings(host.server, ws.remote),
                    backend={"kind": "pueue", "command": JOB.replace("{ctl}", str(ws.ctl))})


def _label_tasks(host, ws, name):
    row = ws.case(name)
    return [t for t in host.tasks().values()
            if t.get("label", "") and t["label"].endswith(f"-{row.id}-{row.run}")]


@then(parsers.parse('pueue holds exactly one task for "{name}", and it succeeded'))
def one_task(ws, pueue_host, name):
    tasks = _label_tasks(pueue_host[0], ws, name)
    assert len(tasks) == 1, tasks
    status = tasks[0]["status"]
    result = status["Done"]["result"] if isinstance(status["Done"], dict) else status["Done"]
    assert result == "Success"
    assert str(tasks[0]["id"]) == ws.case(name).task_id


@then(parsers.parse('the job log of "{name}" is kept with the case'))
def log_kept(ws, name):
    path = shown(ws, name)["job_log"]
    assert path and f"job of case {ws.case(name).id} started" in Path(path).read_text()
    assert "job log" in ws.cli("show", name, check=True).stdout


@when("its pueue task has finished")
def task_finished(ws, pueue_host):
    wait_for(lambda: all("Done" in t["status"] for t in pueue_host[0].tasks().values()),
             what="the pueue task to finish")


@when('someone runs "pueue clean" on the GPU host')
def pueue_clean(pueue_host):
    assert emulator(pueue_host[0].state, "clean").returncode == 0
    assert pueue_host[0].tasks() == {}


@when(parsers.parse('pueue starts answering "{command}" with "{text}"'))
def pueue_garbage(pueue_host, command, text):
    (pueue_host[0].state / f"answer-{command}").write_text(text + "\n")


@given(parsers.parse("another user's task waits in pueue group {group}"))
def foreign_task(pueue_host, group):
    res = emulator(pueue_host[0].state, "add", "-g", group, "-l", "someone-else", "--", "true")
    assert res.returncode == 0, res.stderr
    tasks = pueue_host[0].tasks().values()
    assert any(t["label"] == "someone-else" and "Queued" in json.dumps(t["status"]) for t in tasks)


@when("the pueue daemon restarts")
def pueue_restarts(pueue_host):
    assert emulator(pueue_host[0].state, "_emulator", "restart").returncode == 0


@then(parsers.parse("caseflow status says that pueue group {group} is paused"))
def status_paused(ws, group):
    def said():
        out = ws.cli("status", check=True).stdout
        return f"pueue group(s) {group} PAUSED" in out and out
    wait_for(said, what="caseflow status to report the paused group")


def _start_process(ws, procs):
    log = open(ws.root / f"daemon-{len(procs)}.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "caseflow.cli", "run", "-c", str(ws.config_path)],
                         stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    procs.append(p)
    wait_for(lambda: "caseflow running" in (ws.root / f"daemon-{len(procs) - 1}.log")
             .read_text(errors="replace") or p.poll() is not None, what="caseflow to start")
    assert p.poll() is None, "caseflow exited at start"
    return p


@given(parsers.parse('caseflow runs as a process that will be killed right after its next '
                     '"pueue add"'))
def process_to_be_killed(ws, pueue_host, daemon_procs):
    p = _start_process(ws, daemon_procs)
    (pueue_host[0].state / "kill-after-add").write_text(str(p.pid))


@then(parsers.parse('caseflow dies right after adding the task for "{name}"'))
def died_after_add(ws, pueue_host, daemon_procs, name):
    p = daemon_procs[-1]
    assert p.wait(timeout=DEADLINE) == -signal.SIGKILL
    assert ws.case(name).state == "uploaded"  # the add was never recorded
    assert len(_label_tasks(pueue_host[0], ws, name)) == 1


@when("caseflow is started again as a process")
def started_again(ws, daemon_procs):
    _start_process(ws, daemon_procs)
