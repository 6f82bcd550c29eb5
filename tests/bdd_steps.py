"""Steps shared by the Gherkin features (features/*.feature).

A test module takes them with `from bdd_steps import *`: pytest-bdd registers each
step as a fixture in the module that defines it, so the names must be imported
into the module that binds the scenarios.

Waiting is always on a condition with a generous deadline (harness.wait_for,
Workspace.wait_state); what an operator would look at is read with the real
command line (`caseflow show/status/resources --json`).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pytest_bdd import given, parsers, then, when

from harness import DEADLINE, Workspace, process_alive, wait_for

TERMINAL = ("success", "failure", "not_found")
# A case that has tried the same step this often in a row is stuck retrying; when a
# scenario expects it to end, say so at once instead of waiting out the deadline.
STUCK_ATTEMPTS = 5


# -- fixtures ------------------------------------------------------------------------------
@dataclass
class Context:
    """What a scenario sets up besides the workspace, to watch it and to clean it up."""
    writers: dict = field(default_factory=dict)  # folder name -> Writer
    mounts: list = field(default_factory=list)   # file systems mounted for the scenario
    pruned: str = ""  # what `caseflow prune` printed


@pytest.fixture
def context() -> Context:
    return Context()


@pytest.fixture(autouse=True)
def bdd_cleanup(ws: Workspace, context: Context):
    """After a scenario: stop the copies and the daemon, kill jobs still held, unmount."""
    yield
    try:
        for writer in context.writers.values():
            writer.stop()
        ws.stop()
    finally:
        ws.kill_jobs()
        for mount in context.mounts:
            subprocess.run(["umount", "-l", str(mount)], check=False)


# -- the command line ----------------------------------------------------------------------
def cli_json(ws: Workspace, *args: str):
    proc = ws.cli(*args, "--json", check=True)
    return json.loads(proc.stdout)


def shown(ws: Workspace, name: str) -> dict:
    """The case as `caseflow show NAME --json` shows it to an operator."""
    return cli_json(ws, "show", name)


def slots_shown(ws: Workspace) -> list[dict]:
    return cli_json(ws, "resources")


# -- writing into the inbox the way a slow copy does ---------------------------------------
class Writer:
    """Writes into a folder every `interval` seconds for `duration` seconds, in a thread.

    `mode` "files" adds a new file each time; "append" appends to one file.
    Records the time just before each write, and a failure of its own if any.
    """

    def __init__(self, folder, interval: float, duration: float, mode: str = "files",
                 filename: str = "slice.raw"):
        self.folder = folder
        self.interval = interval
        self.duration = duration
        self.mode = mode
        self.filename = filename
        self.write_times: list[float] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{folder.name}",
                                        daemon=True)

    def start(self) -> "Writer":
        self._thread.start()
        wait_for(lambda: self.write_times or self.error or not self._thread.is_alive(),
                 what="the first write of the copy")
        return self

    def _run(self) -> None:
        try:
            end = time.monotonic() + self.duration
            n = 0
            while not self._stop.is_set():
                self.folder.mkdir(parents=True, exist_ok=True)
                self.write_times.append(time.time())
                if self.mode == "files":
                    (self.folder / f"slice_{n:04d}.raw").write_bytes(b"s" * 512)
                else:
                    with open(self.folder / self.filename, "ab") as f:
                        f.write(b"s" * 512)
                n += 1
                if time.monotonic() >= end:
                    return
                self._stop.wait(self.interval)
        except BaseException as exc:  # reported by the step that watches the copy
            self.error = exc

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def last_write(self) -> float:
        return self.write_times[-1]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=DEADLINE)


# -- starting and stopping -----------------------------------------------------------------
@given("caseflow is running")
@when("caseflow starts")
@given("caseflow starts")
def caseflow_running(ws: Workspace):
    ws.start()


@given("caseflow has been stopped")
@when("caseflow is stopped")
def caseflow_stopped(ws: Workspace):
    ws.stop()


# -- cases ---------------------------------------------------------------------------------
CASE_FOLDER = (r'the case folder "(?P<name>[^"]+)"(?: of (?P<size>\d+) (?P<unit>KB|MB))?'
               r'(?: for (?P<group>[\w.-]+))?'
               r'(?: whose job (?P<job>exits with code \d+|waits to be released|'
               r'writes \d+ (?:KB|MB) of results))?')


def drop(ws: Workspace, name: str, size=None, unit=None, group=None, job=None):
    kwargs: dict = {"group": group}
    if size:
        kwargs["files"] = {"data.bin": b"d" * (int(size) * (1024 if unit == "KB" else 1024 ** 2))}
    if job and job.startswith("exits with code"):
        kwargs["exit_code"] = int(job.rsplit(" ", 1)[1])
    elif job and job.startswith("writes"):
        _, amount, scale, _ = job.split(" ", 3)
        kwargs["write_bytes"] = int(amount) * (1024 if scale == "KB" else 1024 ** 2)
    elif job:
        kwargs["hold"] = name  # the job waits for the release token named like the case
    return ws.drop_case(name, **kwargs)


@given(parsers.re(CASE_FOLDER + r" was dropped into the inbox"))
@when(parsers.re(CASE_FOLDER + r" is dropped into the inbox"))
def case_dropped(ws: Workspace, name, size, unit, group, job):
    drop(ws, name, size, unit, group, job)


@given(parsers.re(CASE_FOLDER + r" is already in the inbox"))
def case_already_in_inbox(ws: Workspace, name, size, unit, group, job):
    assert ws.daemon is None, "this step is meant for before caseflow starts"
    drop(ws, name, size, unit, group, job)


@given(parsers.parse('the case "{name}" for {group} is running and waits to be released'))
def case_running_held(ws: Workspace, name, group):
    drop(ws, name, group=group, job="waits to be released")
    ws.wait_state(name, "running")


@given(parsers.parse('the case "{name}" for {group} waits in the queue'))
def case_queued(ws: Workspace, name, group):
    drop(ws, name, group=group, job="waits to be released")
    ws.wait_state(name, "queued")


def wait_terminal(ws: Workspace, name: str):
    """Wait until the case has ended; fail early if it is stuck retrying a step."""
    def check():
        row = ws.case(name)
        if row is None:
            return None
        if row.state in TERMINAL:
            return row
        if row.attempts >= STUCK_ATTEMPTS:
            raise AssertionError(f"case {name!r} is stuck in {row.state}, retrying "
                                 f"(attempt {row.attempts}): {row.last_error}")
        return None
    return wait_for(check, what=f"case {name!r} to end")


@given(parsers.parse('the case "{name}" has ended in {state:w}'))
@then(parsers.parse('the case "{name}" ends in {state:w}'))
def case_ends_in(ws: Workspace, name, state):
    row = wait_terminal(ws, name)
    assert row.state == state, (f"case {name!r} ended in {row.state}, not {state}"
                                f" (reason: {row.reason})")
    assert shown(ws, name)["state"] == state


@given(parsers.parse('the case "{name}" is {state:w}'))
@then(parsers.parse('the case "{name}" is {state:w}'))
def case_is(ws: Workspace, name, state):
    ws.wait_state(name, state)


@then(parsers.parse('the reason given for "{name}" is "{reason}"'))
def reason_is(ws: Workspace, name, reason):
    assert shown(ws, name)["reason"] == reason


@then(parsers.parse('the reason given for "{name}" mentions "{words}"'))
def reason_mentions(ws: Workspace, name, words):
    reason = shown(ws, name)["reason"] or ""
    assert words.lower() in reason.lower(), f"reason {reason!r} does not mention {words!r}"


@then(parsers.parse('the case "{name}" shows no reason'))
def no_reason(ws: Workspace, name):
    case = shown(ws, name)
    assert case["reason"] is None, case["reason"]


@then(parsers.parse('the history of "{name}" shows {states}'))
def history_shows(ws: Workspace, name, states):
    expected = [s.strip() for s in states.replace(" and ", ", ").split(",")]
    got = [h["to"] for h in shown(ws, name)["history"]]
    assert got == expected


@then(parsers.parse('caseflow lists only the case "{name}"'))
def lists_only(ws: Workspace, name):
    assert [c["name"] for c in cli_json(ws, "status")] == [name]


# -- the operator ----------------------------------------------------------------------------
@when(parsers.parse('the operator retries "{name}"'))
def operator_retries(ws: Workspace, name):
    proc = ws.cli("retry", name)
    assert proc.returncode == 0, f"caseflow retry exited {proc.returncode}: {proc.stderr}"
    assert "failure ->" in proc.stdout, proc.stdout


@when(parsers.parse('the operator cancels "{name}"'))
def operator_cancels(ws: Workspace, name):
    proc = ws.cli("cancel", name)
    assert proc.returncode == 0, f"caseflow cancel exited {proc.returncode}: {proc.stderr}"
    assert "running -> failure (cancelled)" in proc.stdout, proc.stdout


# -- jobs ----------------------------------------------------------------------------------
@given(parsers.parse('the job of "{name}" is running'))
@then(parsers.parse('the job of "{name}" is running'))
def job_running(ws: Workspace, name):
    ws.wait_state(name, "running")
    pid = ws.job_pid(name)
    assert process_alive(pid), f"the job of {name!r} (pid {pid}) is not running"


@when(parsers.parse('the job of "{name}" is released'))
def job_released(ws: Workspace, name):
    ws.release(name)


@when(parsers.parse('the job of "{name}" ends with exit code {code:d}'))
def job_ends_with(ws: Workspace, name, code):
    ws.wait_state(name, "running")
    (ws.remote_folder(name) / "exit_code").write_text(str(code))
    ws.release(name)


@then(parsers.parse('the job of "{name}" is no longer running'))
def job_gone(ws: Workspace, name):
    pid = ws.job_pid(name)
    wait_for(lambda: not process_alive(pid), what=f"the job of {name!r} (pid {pid}) to end")




# -- results and the folder on the GPU host ---------------------------------------------------
@given("caseflow removes a case's folder on the GPU host when the case has ended")
def cleanup_always(ws):
    ws.write_config(remote_cleanup="always")


@given("caseflow removes a case's folder on the GPU host after a success")
def cleanup_on_success(ws):
    ws.write_config(remote_cleanup="on_success")


def _names(text: str) -> list[str]:
    return sorted(n.strip() for n in text.replace(" and ", ", ").split(","))


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def results_folder(ws, name) -> Path:
    case = shown(ws, name)
    assert case["results"], f"no results recorded for {name!r}"
    folder = Path(case["results"])
    assert folder.parent == ws.root / "results"
    return folder


@then(parsers.parse('the results of "{name}" are {files}'))
def results_are(ws, name, files):
    folder = results_folder(ws, name)
    assert _files(folder) == _names(files)
    case = shown(ws, name)
    assert (folder / "output" / "result.txt").read_text().strip() == f"result of {case['id']}"


@then(parsers.parse('the job log among the results of "{name}" says "{words}"'))
def job_log_says(ws, name, words):
    assert words in (results_folder(ws, name) / "caseflow-job.log").read_text()


@given(parsers.parse('the folder of "{name}" is gone from the GPU host'))
@then(parsers.parse('the folder of "{name}" is gone from the GPU host'))
def remote_gone(ws, name):
    folder = Path(shown(ws, name)["remote_path"])
    wait_for(lambda: not folder.exists(), what=f"{folder} to be removed")


@then(parsers.parse('the folder of "{name}" is still on the GPU host'))
def remote_kept(ws, name):
    folder = ws.remote_folder(name)
    assert (folder / "output" / "result.txt").exists()
    row = ws.case(name)
    if row.state in TERMINAL:  # removal would come with the wrap-up: wait for it to be done
        wait_for(lambda: not ws.case(name).wrapup, what=f"the wrap-up of {name!r}")
        assert (folder / "output" / "result.txt").exists()


# -- slots ---------------------------------------------------------------------------------
@then("no GPU slot is held")
def no_slot_held(ws: Workspace):
    held = [s for s in slots_shown(ws) if s["case_id"] is not None]
    assert held == [], f"slots still held: {held}"


@then(parsers.parse('the case "{name}" runs on slot {index:d} of {group}'))
def runs_on_slot(ws: Workspace, name, index, group):
    ws.wait_state(name, "running")
    case = shown(ws, name)
    assert (case["group"], case["slot"]) == (group, index)
    holders = [s["case_name"] for s in slots_shown(ws)
               if (s["group"], s["slot"]) == (group, index)]
    assert holders == [name]
