"""Steps of features/pueue_backend.feature: caseflow over the real sshd to a real pueued
(tests/pueue_daemon.py) of the scenario's version, whose client is `pueue` on the sessions' PATH."""

import os
import shlex
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
from pueue_daemon import PueueDaemon, result_of, status_name  # noqa: E402
from sshd import SSHServer, transport_settings  # noqa: E402

scenarios("pueue_backend.feature")


class PueueHost:
    """A GPU host: a real sshd whose sessions find the test daemon's `pueue` first on PATH."""

    def __init__(self, root: Path, version: str):
        self.server = SSHServer(root / "pueuehost").start()
        self.daemon = PueueDaemon(root / "pueue", version)
        (self.server.bin / "pueue").symlink_to(self.daemon.client)

    def tasks(self) -> dict:
        return self.daemon.tasks()

    def close(self):
        self.daemon.close()
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


def _host(ws, pueue_host, version) -> PueueHost:
    host = PueueHost(ws.root, version)
    pueue_host.append(host)
    ws.write_config(transport=transport_settings(host.server, ws.remote),
                    backend={"kind": "pueue", "command": JOB.replace("{ctl}", str(ws.ctl))})
    return host


@given(parsers.parse("the GPU host runs pueue {version}, but its daemon is not started"))
def host_without_daemon(ws, pueue_host, version):
    _host(ws, pueue_host, version)


@given(parsers.parse("the GPU host runs pueue {version}"))
def host_runs_pueue(ws, pueue_host, version):
    _host(ws, pueue_host, version).daemon.start()


def _label_tasks(host, ws, name):
    row = ws.case(name)
    return {tid: t for tid, t in host.tasks().items()
            if t.get("label") and t["label"].endswith(f"-{row.id}-{row.run}")}


@then(parsers.parse('pueue holds exactly one task for "{name}", and it succeeded'))
def one_task(ws, pueue_host, name):
    tasks = _label_tasks(pueue_host[0], ws, name)
    assert len(tasks) == 1, tasks
    (tid, task), = tasks.items()
    assert result_of(task) == "Success" and tid == ws.case(name).task_id


@then(parsers.parse('the job log of "{name}" is kept with the case'))
def log_kept(ws, name):
    path = shown(ws, name)["job_log"]
    assert path and f"job of case {ws.case(name).id} started" in Path(path).read_text()
    assert "job log" in ws.cli("show", name, check=True).stdout


# -- the daemon ------------------------------------------------------------------------------
def _caseflow_tasks_run(daemon):
    """Before a fault: caseflow's tasks have left pueue's queue (pueue starts a task within
    200 ms of its add) and their jobs have started (caseflow's wrapper wrote its record); a
    restart would otherwise find them queued, not running."""
    def running():
        tasks = [t for t in daemon.tasks().values() if (t["label"] or "").startswith("caseflow-")]
        return tasks and all(status_name(t) == "Done" or (status_name(t) == "Running" and
                                                          Path(t["path"], ".caseflow",
                                                               "pueue-job").exists())
                             for t in tasks)
    wait_for(running, what="caseflow's pueue tasks to run")


@when("the pueue daemon is started")
def daemon_started(pueue_host):
    pueue_host[0].daemon.reap()
    pueue_host[0].daemon.start()


@when("the pueue daemon is stopped and started again")
def daemon_restarted(pueue_host):
    _caseflow_tasks_run(pueue_host[0].daemon)
    pueue_host[0].daemon.stop()
    pueue_host[0].daemon.start()


@when("the pueue daemon is killed with SIGKILL and started again")
def daemon_killed(pueue_host):
    _caseflow_tasks_run(pueue_host[0].daemon)
    pueue_host[0].daemon.kill()
    pueue_host[0].daemon.start()


@when("the pueue daemon is stopped, its state file removed, and started again")
def daemon_state_lost(pueue_host):
    daemon = pueue_host[0].daemon
    _caseflow_tasks_run(daemon)
    daemon.stop()
    daemon.state_file.unlink()
    daemon.start()
    assert daemon.tasks() == {} and set(daemon.groups()) == {"default"}


@when(parsers.parse('the pueue daemon is killed with SIGKILL, the job of "{name}" with it, and '
                    'pueued is started again'))
def daemon_and_job_killed(ws, pueue_host, name):
    """A reboot, short of rebooting: pueued and the job's whole process group SIGKILLed (no
    exit record is written), then pueued started again on its state file."""
    host = pueue_host[0]
    _caseflow_tasks_run(host.daemon)
    record = ws.remote_folder(name) / ".caseflow" / "pueue-job"
    host.killed_group = int(record.read_text().split()[1])
    host.daemon.kill()
    os.killpg(host.killed_group, signal.SIGKILL)
    wait_for(lambda: not host.daemon.task_processes(), what="the job's processes to be gone")
    host.daemon.start()


@then(parsers.parse('pueue says the task of "{name}" was killed and starts nothing by itself'))
def killed_not_restarted(ws, pueue_host, name):
    """Run 1's task (by its label: caseflow may have added run 2's by now) is Done/Killed, and
    its wrapper did not run again (its start record still names the killed group)."""
    row = ws.case(name)
    tasks = [t for t in pueue_host[0].tasks().values()
             if (t["label"] or "").endswith(f"-{row.id}-1")]
    assert len(tasks) == 1 and status_name(tasks[0]) == "Done", tasks
    assert result_of(tasks[0]) == "Killed", tasks[0]
    record = Path(tasks[0]["path"], ".caseflow", "pueue-job").read_text().split()
    assert int(record[1]) == pueue_host[0].killed_group


@then(parsers.parse('the case "{name}" runs again as run {run:d}, its history saying "{words}"'))
def runs_again(ws, name, run, words):
    wait_for(lambda: (row := ws.case(name)).run == run and row.state == "running"
             and row.task_id, what=f"run {run} of {name!r} to be submitted")
    details = [h["detail"] or "" for h in shown(ws, name)["history"]]
    assert any(words in d for d in details), "\n".join(details)
    ended = [r["ended"] for r in shown(ws, name)["runs"]]
    assert ended[:run - 1] == ["rerun"] * (run - 1), ended


@then(parsers.parse('the case "{name}" ran once'))
def ran_once(ws, name):
    assert shown(ws, name)["run"] == 1 and [r["run"] for r in shown(ws, name)["runs"]] == [1]


@given(parsers.parse("pueue's daemon will be killed right before the next \"pueue add\" "
                     "reaches it"))
def killed_before_add(pueue_host):
    pueue_host[0].daemon.kill_before_add()


@then(parsers.parse('pueue says the task of "{name}" was killed, but its job still runs'))
def killed_but_running(ws, pueue_host, name):
    daemon = pueue_host[0].daemon
    task = daemon.tasks()[ws.case(name).task_id]
    assert status_name(task) == "Done" and result_of(task) == "Killed", task
    assert daemon.task_processes(), "the job's processes are gone"


@then(parsers.parse("pueue's group {group} has {count:d} parallel task again"))
def group_back(pueue_host, group, count):
    assert pueue_host[0].daemon.groups()[group]["parallel_tasks"] == count


# -- what people run on the host -----------------------------------------------------------
@when("its pueue task has finished")
def task_finished(ws, pueue_host):
    wait_for(lambda: all(status_name(t) == "Done" for t in pueue_host[0].tasks().values()),
             what="the pueue task to finish")


@when('someone runs "pueue clean" on the GPU host')
def pueue_clean(pueue_host):
    pueue_host[0].daemon.run("clean", check=True)
    assert pueue_host[0].tasks() == {}


@when(parsers.parse('someone runs "pueue {command}" on the task of "{name}"'))
def pueue_on_task(ws, pueue_host, command, name):
    pueue_host[0].daemon.run(command, ws.case(name).task_id, check=True)


@when(parsers.parse('someone runs "pueue {command}" on the GPU host'))
def pueue_on_host(pueue_host, command):
    pueue_host[0].daemon.run(*command.split(), check=True)


@given(parsers.parse("another user's task waits in pueue group {group}"))
def foreign_task(pueue_host, group):
    daemon = pueue_host[0].daemon
    daemon.run("add", "-g", group, "-l", "someone-else", "--", "true", check=True)
    assert any(t["label"] == "someone-else" and status_name(t) == "Queued"
               for t in daemon.tasks().values())


@when(parsers.parse('the pueue command on the GPU host starts printing "{text}" before its '
                    'answers'))
def chatty_pueue(pueue_host, text):
    """A site wrapper in front of the real client that announces itself on stdout."""
    host = pueue_host[0]
    wrapper = host.server.bin / "pueue"
    wrapper.unlink()
    wrapper.write_text(f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(text)}\n"
                       f"exec {shlex.quote(str(host.daemon.client))} \"$@\"\n")
    wrapper.chmod(0o755)


# -- what caseflow status says ---------------------------------------------------------------
@then(parsers.parse('caseflow status shows the host with "{words}"'))
def status_host(ws, words):
    def said():
        out = ws.cli("status", check=True).stdout
        return any(line.startswith("host testhost: ") and words in line
                   for line in out.splitlines()) and out
    wait_for(said, what=f"caseflow status to show the host with {words!r}")


@then(parsers.parse('caseflow status no longer shows "{words}"'))
def status_not(ws, words):
    wait_for(lambda: words not in ws.cli("status", check=True).stdout,
             what=f"caseflow status to stop showing {words!r}")


@then(parsers.parse('caseflow status shows "{words}" for "{name}"'))
def status_case(ws, words, name):
    def said():
        out = ws.cli("status", check=True).stdout
        return any(f" {name} " in f" {line} " and words in line for line in out.splitlines())
    wait_for(said, what=f"caseflow status to show {words!r} for {name!r}")


@then(parsers.parse('the case "{name}" waits for a GPU slot'))
def waits_for_slot(ws, name):
    ws.wait_state(name, "queued")
    row = ws.case(name)
    assert row.slot_index is None and row.task_id is None, row


# -- caseflow as a process that dies ---------------------------------------------------------
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
    pueue_host[0].daemon.kill_after_add(p.pid)


@then(parsers.parse('caseflow dies right after adding the task for "{name}"'))
def died_after_add(ws, pueue_host, daemon_procs, name):
    p = daemon_procs[-1]
    assert p.wait(timeout=DEADLINE) == -signal.SIGKILL
    assert ws.case(name).state == "uploaded"  # the add was never recorded
    assert len(_label_tasks(pueue_host[0], ws, name)) == 1


@when("caseflow is started again as a process")
def started_again(ws, daemon_procs):
    _start_process(ws, daemon_procs)
