"""The pueue emulator (tests/emulators/pueue) against its specification, shared/pueue/FORMAT.md.

The emulator runs as a real executable: directly (a subprocess with the emulator's `bin` first
on PATH) and through the tests' real OpenSSH server (its `bin` is first on the remote PATH).
Both pueue generations are covered: 3.4.1 (last 3.x) and 4.0.4 (latest 4.x), plus a few older
versions where FORMAT.md has a version rule. Every wait polls a condition (50 ms, up to 60 s).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from harness import wait_for
from pueue_emulator import install, read_state, state_path, stop_tasks
from sshd import SSHServer

SHARED = Path(__file__).resolve().parent / "data" / "pueue"  # pueue's own state files
V4_STATE = SHARED / "v4.0.0_state.json"
V2_STATE = SHARED / "v2.0.0_state.json"
DEADLINE = 60.0
VERSIONS = ["3.4.1", "4.0.4"]
TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.(\d{3}|\d{6}|\d{9}))?(Z|[+-]\d\d:\d\d)")

# FORMAT.md, "4.x task" and "3.x task": the fields, in order.
FIELDS_4 = ["id", "created_at", "original_command", "command", "path", "envs", "group",
            "dependencies", "priority", "label", "status"]
FIELDS_3 = ["id", "created_at", "enqueued_at", "original_command", "command", "path", "envs",
            "group", "dependencies", "priority", "label", "status", "prev_status", "start", "end"]


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def kind(task: dict) -> str:
    """The status name of a task, in either encoding."""
    st = task["status"]
    return st if isinstance(st, str) else next(iter(st))


def result(task: dict):
    """The TaskResult of a Done task, in either encoding."""
    done = task["status"]["Done"]
    return done["result"] if isinstance(done, dict) and "result" in done else done


def q(path) -> str:
    return shlex.quote(str(path))


def hold(ctl: Path, token: str) -> str:
    """A task command that marks its start, then waits for `ctl/go-<token>`."""
    return (f"touch {q(ctl / ('started-' + token))}; "
            f"while [ ! -e {q(ctl / ('go-' + token))} ]; do sleep 0.05; done")


class Emu:
    """One private emulator install: `root/bin/pueue`, state in `root/pueue-state`."""

    def __init__(self, root: Path, version: str, state_dir: Path | None = None):
        self.root = root
        self.version = version
        self.bin = root / "bin"
        self.state = install(self.bin, state_dir=state_dir, version=version)
        self.work = root / "work"
        self.ctl = root / "ctl"
        self.work.mkdir(parents=True, exist_ok=True)
        self.ctl.mkdir(exist_ok=True)
        self.env = {**os.environ, "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin"}

    @property
    def v4(self) -> bool:
        return self.version.startswith("4")

    def run(self, *args: str, cwd: Path | None = None, env: dict | None = None,
            ) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "pueue"), *args], cwd=cwd or self.work,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=DEADLINE)

    def ok(self, *args: str, **kwargs) -> str:
        proc = self.run(*args, **kwargs)
        assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    def add(self, *args: str, **kwargs) -> int:
        return int(self.ok("add", "-p", *args, **kwargs))

    def failure_text(self, proc: subprocess.CompletedProcess) -> str:
        """A daemon failure: exit 1, stderr for 4.x and stdout for 3.x, the other stream empty."""
        assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
        text, other = (proc.stderr, proc.stdout) if self.v4 else (proc.stdout, proc.stderr)
        assert other == ""
        return text

    def status(self, *args: str) -> dict:
        return json.loads(self.ok("status", "--json", *args))

    def task(self, task_id: int) -> dict:
        return self.status()["tasks"][str(task_id)]

    def wait_kind(self, task_id: int, *kinds: str) -> dict:
        def check():
            task = self.status()["tasks"].get(str(task_id))
            return task if task is not None and kind(task) in kinds else None
        return wait_for(check, what=f"task {task_id} to be {kinds}")

    def wait_file(self, path: Path) -> None:
        wait_for(path.exists, what=f"{path} to exist")


@pytest.fixture(params=VERSIONS)
def emu(request, tmp_path):
    e = Emu(tmp_path / "host", request.param)
    yield e
    stop_tasks(e.state)


def make_emu(tmp_path: Path, version: str, name: str = "host") -> Emu:
    return Emu(tmp_path / name, version)


@pytest.fixture
def emus(tmp_path):
    """Make emulators of chosen versions; all are stopped at teardown."""
    made: list[Emu] = []

    def factory(version: str) -> Emu:
        e = Emu(tmp_path / f"host-{len(made)}", version)
        made.append(e)
        return e
    yield factory
    for e in made:
        stop_tasks(e.state)


# -- basics --------------------------------------------------------------------------------------
def test_version_is_printed_like_clap(emus):
    for version in ("3.4.1", "4.0.4", "4.0.2"):
        e = emus(version)
        assert e.ok("--version") == f"pueue {version}\n"
        assert e.ok("-V") == f"pueue {version}\n"


def test_install_places_the_state_beside_bin_and_runs_from_a_copy(tmp_path):
    e = make_emu(tmp_path, "4.0.4")
    assert e.state == state_path(e.bin) == (tmp_path / "host" / "pueue-state").resolve()
    assert not (e.bin / "pueue").is_symlink() and os.access(e.bin / "pueue", os.X_OK)
    assert json.loads((e.state / "emulator.json").read_text()) == {"version": "4.0.4"}
    assert e.ok("_emulator", "state-dir").strip() == str(e.state)
    e.add("-s", "--", "true")
    assert "0" in read_state(e.state)["tasks"]


def test_add_prints_the_id_or_a_sentence_and_warns_about_a_paused_group(emu):
    assert emu.ok("add", "-p", "-s", "--", "true") == "0\n"
    assert emu.ok("add", "-s", "--", "true") == "New task added (id 1).\n"
    assert emu.ok("pause") == 'Group "default" is being paused.\n'
    assert emu.ok("add", "--", "true") == ("New task added (id 2).\n"
                                           "The group of this task is currently paused!\n")
    assert emu.ok("add", "-p", "--", "true") == "3\n"  # -p: just the id, no warning
    assert [kind(emu.task(i)) for i in (2, 3)] == ["Queued", "Queued"]  # paused: nothing starts
    assert emu.ok("start") == 'Group "default" is being resumed.\n'
    assert result(emu.wait_kind(3, "Done")) == "Success"


def test_options_before_the_command_or_after_double_dash(emu):
    emu.ok("group", "add", "g")
    a = emu.add("-s", "-l", "x", "echo", "-n", "hi")  # options after the command are its own
    b = emu.add("-s", "--label=y", "-gg", "--", "echo", "a  b", "c")  # joined with spaces
    c = emu.add("-s", "-e", "--", "echo", "a b", "it's", "plain/path.txt")
    d = emu.add("-s", "-a", str(a), str(b), "-o", "7", "--", "true")
    tasks = emu.status()["tasks"]
    assert (tasks[str(a)]["command"], tasks[str(a)]["label"]) == ("echo -n hi", "x")
    assert (tasks[str(b)]["command"], tasks[str(b)]["group"]) == ("echo a  b c", "g")
    assert tasks[str(c)]["command"] == "echo 'a b' 'it'\\''s' plain/path.txt"
    assert tasks[str(c)]["original_command"] == tasks[str(c)]["command"]
    assert (tasks[str(d)]["dependencies"], tasks[str(d)]["priority"]) == ([a, b], 7)
    assert tasks[str(a)]["path"] == str(emu.work.resolve())  # the add's working directory


def test_usage_errors_exit_2_and_change_nothing(emu):
    for args in (["frobnicate"], ["add"], ["add", "-i", "-s", "--", "true"],
                 ["add", "--bogus", "--", "true"], ["add", "-a", "x", "--", "true"],
                 ["kill", "abc"], ["remove"], ["status", "--nope"]):
        proc = emu.run(*args)
        assert proc.returncode == 2, args
        assert proc.stderr.startswith("error: ") and proc.stdout == "", args
    assert emu.status()["tasks"] == {}


# -- status --json ---------------------------------------------------------------------------------
def test_status_json_is_one_compact_line_in_the_versions_encoding(emu):
    emu.ok("group", "add", "held")
    emu.ok("pause", "-g", "held")
    done = emu.add("--", "true")
    failed = emu.add("--", "exit 3")
    stashed = emu.add("-s", "--", "true")
    queued = emu.add("-g", "held", "--", "true")
    emu.wait_kind(failed, "Done")
    text = emu.ok("status", "--json")
    state = json.loads(text)
    assert text == json.dumps(state, separators=(",", ":"), ensure_ascii=False) + "\n"
    assert list(state) == ["tasks", "groups"]
    assert list(state["tasks"]) == [str(i) for i in (done, failed, stashed, queued)]
    assert state["groups"] == {"default": {"status": "Running", "parallel_tasks": 1},
                               "held": {"status": "Paused", "parallel_tasks": 1}}
    tasks = state["tasks"]
    if emu.v4:
        for task in tasks.values():
            assert list(task) == FIELDS_4
        ok = tasks[str(done)]["status"]["Done"]
        assert list(ok) == ["enqueued_at", "start", "end", "result"] and ok["result"] == "Success"
        assert tasks[str(failed)]["status"]["Done"]["result"] == {"Failed": 3}
        assert tasks[str(stashed)]["status"] == {"Stashed": {"enqueue_at": None}}
        assert list(tasks[str(queued)]["status"]) == ["Queued"]
        assert list(tasks[str(queued)]["status"]["Queued"]) == ["enqueued_at"]
    else:
        for task in tasks.values():
            assert list(task) == FIELDS_3
        assert tasks[str(done)]["status"] == {"Done": "Success"}
        assert tasks[str(failed)]["status"] == {"Done": {"Failed": 3}}
        assert tasks[str(stashed)]["status"] == {"Stashed": {"enqueue_at": None}}
        assert tasks[str(queued)]["status"] == "Queued"
        assert tasks[str(queued)]["prev_status"] == "Locked"  # a freshly added 3.x task
        assert tasks[str(done)]["prev_status"] == "Running"
        assert tasks[str(queued)]["start"] is None and tasks[str(queued)]["end"] is None
        assert tasks[str(stashed)]["enqueued_at"] is None
        assert TS_RE.fullmatch(tasks[str(done)]["end"])


def test_status_json_has_the_shape_of_the_shipped_state_files(emu):
    """Key order and status encodings match pueue's own files (FORMAT.md's two samples)."""
    emu.add("--", "true")
    emu.add("--", "exit 2")
    emu.add("-s", "--", "ls")
    emu.wait_kind(1, "Done")
    ours = emu.status()["tasks"]
    if emu.v4:
        theirs = json.loads(V4_STATE.read_text())["tasks"]
        for mine, real in ((ours["0"], theirs["0"]), (ours["1"], theirs["1"]),
                           (ours["2"], theirs["2"])):
            assert list(mine) == list(real)
            assert json.dumps(shape(mine["status"])) == json.dumps(shape(real["status"]))
    else:
        theirs = json.loads(V2_STATE.read_text())["tasks"]
        for mine, real in ((ours["0"], theirs["0"]), (ours["2"], theirs["3"])):
            # 2.0.0 predates created_at/enqueued_at (3.0.0) and priority (3.2.0).
            assert [k for k in mine if k not in ("created_at", "enqueued_at", "priority")] \
                == list(real)
            assert shape(mine["status"]) == shape(real["status"])
        assert ours["1"]["status"] == {"Done": {"Failed": 2}}


def shape(value):
    """Replace leaves by their type name, keeping keys (and their order)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, str):
        return "ts" if TS_RE.fullmatch(value) else value
    return type(value).__name__


def test_status_group_filter_from_3_4_0(emus):
    for version, filtered in (("3.3.0", False), ("3.4.1", True), ("4.0.4", True)):
        e = emus(version)
        e.ok("group", "add", "g")
        e.add("-s", "--", "true")
        e.add("-s", "-g", "g", "--", "true")
        state = e.status("--group", "g")
        assert list(state["tasks"]) == (["1"] if filtered else ["0", "1"]), version
        assert list(state["groups"]) == ["default", "g"]
        unknown = e.run("status", "--json", "--group", "nope")
        assert unknown.returncode == 0 and unknown.stderr == ""
        assert json.loads(unknown.stdout)["tasks"] == ({} if filtered else
                                                       json.loads(e.ok("status", "--json"))["tasks"])


def test_timestamps_rfc3339_with_nanoseconds_and_the_offset_rules(emus):
    cases = [("4.0.4", "UTC0", "Z"), ("3.4.1", "UTC0", "Z"), ("3.3.0", "UTC0", "Z"),
             ("3.2.0", "UTC0", "+00:00"), ("4.0.4", "XYZ-2", "+02:00"),
             ("3.4.1", "XYZ+5:30", "-05:30")]
    for version, tz, suffix in cases:
        e = emus(version)
        task_id = e.add("--", "true", env={"TZ": tz})
        task = e.wait_kind(task_id, "Done")
        if e.v4:
            done = task["status"]["Done"]
            stamps = [task["created_at"], done["enqueued_at"], done["start"], done["end"]]
        else:
            stamps = [task["created_at"], task["enqueued_at"], task["start"], task["end"]]
        for stamp in stamps:
            assert TS_RE.fullmatch(stamp) and stamp.endswith(suffix), (version, tz, stamp)
        # chrono's AutoSi: 9 digits unless the nanoseconds end in zeros (practically never).
        assert any(re.search(r"\.\d{9}(Z|[+-])", s) for s in stamps), stamps


def test_envs_are_the_add_environment_plus_group_and_worker(tmp_path):
    # Installed with an explicit state folder: the wrapper's variable stays out of envs.
    e = Emu(tmp_path / "host", "4.0.4", state_dir=tmp_path / "elsewhere")
    try:
        dump = e.ctl / "env.txt"
        task_id = e.add("--", f"env > {q(dump)}", env={"CASE_MARKER": "case 7"})
        task = e.wait_kind(task_id, "Done")
        assert result(task) == "Success"
        envs = task["envs"]
        assert envs["CASE_MARKER"] == "case 7" and envs["PATH"] == e.env["PATH"]
        assert (envs["PUEUE_GROUP"], envs["PUEUE_WORKER_ID"]) == ("default", "0")
        assert "PUEUE_EMULATOR_STATE" not in envs
        lines = dump.read_text().splitlines()
        assert "CASE_MARKER=case 7" in lines
        assert "PUEUE_GROUP=default" in lines and "PUEUE_WORKER_ID=0" in lines
        assert (tmp_path / "elsewhere" / "state.json").exists()
        assert not (tmp_path / "host" / "pueue-state").exists()
    finally:
        stop_tasks(e.state)


# -- running tasks ---------------------------------------------------------------------------------
def test_exit_codes_become_success_and_failed(emu):
    ok = emu.add("--", "echo fine")
    bad = emu.add("--", "echo broken >&2; exit 3")
    assert result(emu.wait_kind(ok, "Done")) == "Success"
    assert result(emu.wait_kind(bad, "Done")) == {"Failed": 3}
    log = json.loads(emu.ok("log", str(ok), str(bad), "--json"))
    assert log[str(ok)]["output"] == "fine" and log[str(bad)]["output"] == "broken"


def test_tasks_run_in_their_directory_through_sh(emu):
    here = emu.work / "case dir"
    here.mkdir()
    task_id = emu.add("--", "pwd > where.txt; [ -n \"$0\" ] && echo \"$0\" > shell.txt",
                      cwd=here)
    assert result(emu.wait_kind(task_id, "Done")) == "Success"
    assert (here / "where.txt").read_text().strip() == str(here.resolve())
    assert (here / "shell.txt").read_text().strip() == "sh"


def test_parallel_tasks_are_respected_and_the_next_task_starts_by_itself(emu):
    emu.ok("group", "add", "g", "-p", "2")
    ids = [emu.add("-g", "g", "--", hold(emu.ctl, str(i))) for i in range(3)]
    emu.wait_file(emu.ctl / "started-0")
    emu.wait_file(emu.ctl / "started-1")
    tasks = emu.status()["tasks"]
    assert [kind(tasks[str(i)]) for i in ids] == ["Running", "Running", "Queued"]
    assert not (emu.ctl / "started-2").exists()
    workers = sorted(tasks[str(i)]["envs"]["PUEUE_WORKER_ID"] for i in ids[:2])
    assert workers == ["0", "1"]
    # Release the first: the third starts without anybody calling pueue.
    (emu.ctl / "go-0").touch()
    emu.wait_file(emu.ctl / "started-2")
    tasks = emu.status()["tasks"]
    assert [kind(tasks[str(i)]) for i in ids] == ["Done", "Running", "Running"]
    assert tasks[str(ids[2])]["envs"]["PUEUE_WORKER_ID"] == "0"  # the freed worker slot
    for i in (1, 2):
        (emu.ctl / f"go-{i}").touch()
    for task_id in ids:
        assert result(emu.wait_kind(task_id, "Done")) == "Success"


def test_unlimited_parallel_and_priority_order(emu):
    order = emu.ctl / "order.txt"
    blocker = emu.add("--", hold(emu.ctl, "b"))
    emu.wait_file(emu.ctl / "started-b")
    low = emu.add("-o", "1", "--", f"echo low >> {q(order)}")
    high = emu.add("-o", "5", "--", f"echo high >> {q(order)}")
    same = emu.add("-o", "1", "--", f"echo same >> {q(order)}")
    (emu.ctl / "go-b").touch()
    for task_id in (blocker, low, high, same):
        emu.wait_kind(task_id, "Done")
    assert order.read_text().split() == ["high", "low", "same"]
    emu.ok("parallel", "0")
    ids = [emu.add("--", hold(emu.ctl, f"u{i}")) for i in range(3)]
    for i in range(3):
        emu.wait_file(emu.ctl / f"started-u{i}")
    assert [kind(emu.task(i)) for i in ids] == ["Running"] * 3
    for i in range(3):
        (emu.ctl / f"go-u{i}").touch()


def test_kill_ends_as_killed_and_kills_the_processes(emu):
    pid_file = emu.ctl / "pid"
    task_id = emu.add("--", f"sleep 300 & echo $! > {q(pid_file)}; wait")
    emu.wait_file(pid_file)
    pid = int(wait_for(lambda: pid_file.read_text().strip(), what="the pid"))
    queued = emu.add("--", "true")
    assert kind(emu.task(queued)) == "Queued"
    assert emu.ok("kill", str(task_id)) == f"Tasks are being killed: {task_id}\n"
    task = emu.task(task_id)
    assert result(task) == "Killed"
    wait_for(lambda: not process_alive(pid), what="the task's processes to die")
    assert result(emu.wait_kind(queued, "Done")) == "Success"  # the slot was freed
    # Nothing running among the ids: a failure, on the version's stream.
    assert emu.failure_text(emu.run("kill", str(task_id), "99")) == \
        f"The command failed for tasks: {task_id}, 99\n"


def test_kill_without_ids_kills_the_default_group_and_pauses_it_when_tasks_wait(emu):
    running = emu.add("--", hold(emu.ctl, "k"))
    emu.wait_file(emu.ctl / "started-k")
    waiting = emu.add("--", "true")
    assert emu.ok("kill") == ('All tasks of group "default" are being killed. '
                              "The group will also be paused!!!\n")
    state = emu.status()
    assert result(state["tasks"][str(running)]) == "Killed"
    assert kind(state["tasks"][str(waiting)]) == "Queued"
    assert state["groups"]["default"]["status"] == "Paused"


def test_pause_and_start_a_group_stop_and_resume_its_running_tasks(emu):
    # The task must not fork short-lived children while stopped: the emulator's task groups
    # are orphaned (the wrapper's parent is init, unlike pueue's tasks under pueued), and the
    # kernel resumes a stopped orphaned group with SIGHUP+SIGCONT when a member exits.
    pid_file = emu.ctl / "pid"
    started = emu.ctl / "started-p"
    task_id = emu.add("--", f"echo $$ > {q(pid_file)}; touch {q(started)}; exec sleep 300")
    emu.wait_file(started)
    pid = int(pid_file.read_text())
    assert emu.ok("pause") == 'Group "default" is being paused.\n'
    task = emu.task(task_id)
    assert kind(task) == "Paused"
    if emu.v4:
        assert list(task["status"]["Paused"]) == ["enqueued_at", "start"]
    else:
        assert task["status"] == "Paused"
    wait_for(lambda: process_state(pid) == "T", what="the task to be stopped")
    assert emu.ok("start") == 'Group "default" is being resumed.\n'
    assert kind(emu.task(task_id)) == "Running"
    wait_for(lambda: process_state(pid) != "T", what="the task to run again")
    emu.ok("kill", str(task_id))
    assert result(emu.wait_kind(task_id, "Done")) == "Killed"


def test_dependencies(emu):
    failing = emu.add("--", "exit 1")
    after_failure = emu.add("-a", str(failing), "--", "true")
    fine = emu.add("--", "true")
    after_success = emu.add("--after", str(fine), "--", "true")
    assert result(emu.wait_kind(after_failure, "Done")) == "DependencyFailed"
    assert result(emu.wait_kind(after_success, "Done")) == "Success"
    assert emu.failure_text(emu.run("add", "-a", "42", "--", "true")) == \
        "Unable to setup dependencies : task(s) [42] not found\n"


def test_delay_keeps_the_task_stashed_until_its_time(emu):
    out = emu.ok("add", "-d", "1", "--", "true")
    assert re.fullmatch(r"New task added \(id 0\)\. It will be enqueued at "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n", out)
    status = emu.task(0)["status"]
    if kind(emu.task(0)) == "Stashed":  # (unless a slow machine already passed the second)
        assert TS_RE.fullmatch(status["Stashed"]["enqueue_at"])
    assert result(emu.wait_kind(0, "Done")) == "Success"  # each poll lets the daemon catch up


def test_start_force_starts_and_enqueue_enqueues_stashed_tasks(emu):
    blocker = emu.add("--", hold(emu.ctl, "f"))
    emu.wait_file(emu.ctl / "started-f")
    forced = emu.add("-s", "--", "true")
    assert emu.ok("start", str(forced)) == f"Tasks have been started/resumed: {forced}\n"
    assert result(emu.wait_kind(forced, "Done")) == "Success"  # despite the full slot
    immediate = emu.add("-i", "--", "true")
    assert result(emu.wait_kind(immediate, "Done")) == "Success"
    later = emu.add("-s", "--", "true")
    assert emu.ok("enqueue", str(later)) == f"Stashed tasks have been enqueued: {later}\n"
    assert kind(emu.task(later)) == "Queued"
    (emu.ctl / "go-f").touch()
    assert result(emu.wait_kind(later, "Done")) == "Success"
    assert result(emu.task(blocker)) == "Success"


# -- removing tasks and id reuse ----------------------------------------------------------------------
def test_remove_clean_and_id_reuse(emu):
    for command in ("true", "exit 4", "true"):
        emu.add("--", command)
    emu.wait_kind(2, "Done")
    running = emu.add("--", hold(emu.ctl, "r"))
    emu.wait_file(emu.ctl / "started-r")
    assert emu.ok("remove", "2", str(running)) == \
        f"Tasks removed from list: 2\nThe command failed for tasks: {running}\n"
    assert emu.failure_text(emu.run("rm", str(running))) == \
        f"The command failed for tasks: {running}\n"
    assert not (emu.state / "task_logs" / "2.log").exists()
    (emu.ctl / "go-r").touch()
    emu.wait_kind(running, "Done")
    emu.ok("remove", str(running))
    assert emu.add("-s", "--", "true") == 2  # the highest id + 1: 2 is reused
    assert emu.ok("clean", "-s") == "All successfully finished tasks have been removed\n"
    assert list(emu.status()["tasks"]) == ["1", "2"]  # the failed one and the stashed one
    assert emu.ok("clean") == "All finished tasks have been removed\n"
    assert list(emu.status()["tasks"]) == ["2"]
    emu.ok("remove", "2")
    assert emu.add("--", "true") == 0
    assert result(emu.wait_kind(0, "Done")) == "Success"


def test_label_round_trip(emu):
    label = "case-0042 ünïcode \"quoted\" and spaces"
    task_id = emu.add("-s", "-l", label, "--", "true")
    unlabelled = emu.add("-s", "--", "true")
    tasks = emu.status()["tasks"]
    assert tasks[str(task_id)]["label"] == label and tasks[str(unlabelled)]["label"] is None
    assert f'"label":{json.dumps(label, ensure_ascii=False)}' in emu.ok("status", "--json")


def test_concurrent_adds_get_distinct_ids(emu):
    procs = [subprocess.Popen([str(emu.bin / "pueue"), "add", "-p", "-s", "--", f"echo {i}"],
                              cwd=emu.work, env=emu.env, stdout=subprocess.PIPE, text=True)
             for i in range(12)]
    ids = sorted(int(p.communicate(timeout=DEADLINE)[0]) for p in procs)
    assert ids == list(range(12))
    assert sorted(int(k) for k in emu.status()["tasks"]) == ids


# -- working directories -----------------------------------------------------------------------------
def test_missing_working_directory_is_refused_by_4_0_3_and_later(emus):
    for version in ("4.0.3", "4.0.4"):
        e = emus(version)
        proc = e.run("add", "-w", str(e.root / "missing"), "--", "true")
        assert proc.returncode == 1 and proc.stdout == ""
        assert "No such file or directory" in proc.stderr
        assert e.status()["tasks"] == {}
        (e.work / "real").mkdir()
        (e.work / "link").symlink_to(e.work / "real")
        task_id = e.add("-w", "link", "--", "true")  # relative, through a symlink
        assert e.task(task_id)["path"] == str((e.work / "real").resolve())


def test_missing_working_directory_fails_to_spawn_before_4_0_3(emus):
    for version in ("3.4.1", "4.0.2"):
        e = emus(version)
        missing = str(e.root / "missing")
        task_id = e.add("-w", missing, "--", "true")
        task = e.wait_kind(task_id, "Done")
        assert task["path"] == missing
        assert result(task) == {"FailedToSpawn": (
            f"Failed to spawn child {task_id} with err: Os {{ code: 2, kind: NotFound, "
            f'message: "No such file or directory" }}')}
        relative = e.add("-s", "-w", "some/where", "--", "true")
        assert e.task(relative)["path"] == "some/where"  # as given


def test_a_directory_removed_before_the_start_fails_to_spawn_and_logs_by_version(emu):
    gone = emu.work / "gone"
    gone.mkdir()
    emu.ok("pause")
    task_id = emu.add("-w", str(gone), "--", "true")
    gone.rmdir()
    emu.ok("start")
    task = emu.wait_kind(task_id, "Done")
    assert "FailedToSpawn" in result(task)
    output = json.loads(emu.ok("log", str(task_id), "--json"))[str(task_id)]["output"]
    if emu.v4:  # 4.x writes the error into the task's log
        assert output.startswith("Pueue error, failed to spawn task. Check your command.\n"
                                 f"Failed to spawn child {task_id} with err: Os {{ code: 2")
    else:  # 3.x removes the log
        assert output.startswith("(Pueue error) Failed to get log file handle")


# -- groups -------------------------------------------------------------------------------------------
def test_unknown_group_message_and_stream(emu):
    emu.ok("group", "add", "gpu_a")
    proc = emu.run("add", "-g", "nope", "--", "true")
    assert emu.failure_text(proc) == \
        'Group nope doesn\'t exists. Use one of these: ["default", "gpu_a"]\n'
    assert emu.status()["tasks"] == {}


def test_group_add_parallel_json_and_remove(emu):
    created = emu.ok("group", "add", "gpu_a", "-p", "2")
    assert created == ('New group "gpu_a" has been created\n' if emu.v4
                       else 'Group "gpu_a" is being created\n')
    assert emu.failure_text(emu.run("group", "add", "gpu_a")) == \
        'Group "gpu_a" already exists\n'
    emu.ok("group", "add", "b")
    assert emu.ok("group", "--json") == (
        '{"b":{"status":"Running","parallel_tasks":1},'
        '"default":{"status":"Running","parallel_tasks":1},'
        '"gpu_a":{"status":"Running","parallel_tasks":2}}\n')
    assert emu.ok("parallel", "3", "-g", "gpu_a") == \
        'Parallel tasks setting for group "gpu_a" adjusted\n'
    emu.ok("pause", "-g", "b")
    assert emu.ok("group") == ('Group "b" (1 parallel): paused\n'
                               'Group "default" (1 parallel): running\n'
                               'Group "gpu_a" (3 parallel): running\n')
    assert emu.failure_text(emu.run("group", "remove", "default")) == \
        "You cannot delete the default group\n"
    emu.add("-s", "-g", "gpu_a", "--", "true")
    assert emu.failure_text(emu.run("group", "remove", "gpu_a")) == \
        "You cannot remove a group, if there're still tasks in it.\n"
    assert emu.ok("group", "remove", "b") == ('Group "b" has been removed\n' if emu.v4
                                              else 'Group "b" is being removed\n')
    assert list(emu.status()["groups"]) == ["default", "gpu_a"]


def test_group_json_needs_3_2_0(emus):
    old = emus("3.1.0")
    assert old.run("group", "--json").returncode == 2
    old.add("-s", "--", "true")
    assert "priority" not in old.task(0)  # priority came with 3.2.0
    assert emus("3.2.0").ok("group", "--json").startswith('{"default":')


# -- logs ------------------------------------------------------------------------------------------
def test_log_json_combines_stdout_and_stderr_and_limits_lines(emu):
    task_id = emu.add("--", "for i in $(seq 1 10); do echo out$i; echo err$i >&2; done")
    emu.wait_kind(task_id, "Done")
    expected = [f"{s}{i}" for i in range(1, 11) for s in ("out", "err")]
    log = json.loads(emu.ok("log", str(task_id), "--json"))
    assert list(log) == [str(task_id)] and list(log[str(task_id)]) == ["task", "output"]
    assert log[str(task_id)]["output"] == "\n".join(expected[-15:])  # the default: 15 lines
    task = log[str(task_id)]["task"]
    assert task["envs"] == {}
    assert {**task, "envs": None} == {**emu.task(task_id), "envs": None}
    short = json.loads(emu.ok("log", str(task_id), "--json", "-l", "2"))
    assert short[str(task_id)]["output"] == "out10\nerr10"
    full = json.loads(emu.ok("log", str(task_id), "--json", "--full"))
    assert full[str(task_id)]["output"] == "\n".join(expected) + "\n"
    assert emu.ok("log", "77", "--json") == "{}\n"  # unknown ids are skipped
    assert emu.run("log", str(task_id), "--json", "--full", "-l", "3").returncode == 2


# -- the daemon going away ------------------------------------------------------------------------
def test_restart_kills_running_tasks_and_pauses_groups_with_queued_tasks(emu):
    emu.ok("group", "add", "other")
    done = emu.add("-g", "other", "--", "true")
    emu.wait_kind(done, "Done")
    pid_file = emu.ctl / "pid"
    running = emu.add("--", f"echo $$ > {q(pid_file)}; " + hold(emu.ctl, "x"))
    emu.wait_file(emu.ctl / "started-x")
    pid = int(pid_file.read_text())
    queued = emu.add("--", "true")
    stashed = emu.add("-s", "--", "true")
    assert emu.ok("_emulator", "restart") == ""
    state = emu.status()
    assert result(state["tasks"][str(running)]) == "Killed"
    wait_for(lambda: not process_alive(pid), what="the killed task's process to die")
    assert kind(state["tasks"][str(queued)]) == "Queued"
    assert kind(state["tasks"][str(stashed)]) == "Stashed"
    assert result(state["tasks"][str(done)]) == "Success"
    assert state["groups"] == {"default": {"status": "Paused", "parallel_tasks": 1},
                               "other": {"status": "Running", "parallel_tasks": 1}}
    emu.ok("start")
    assert result(emu.wait_kind(queued, "Done")) == "Success"


def test_restart_turns_locked_tasks_into_stashed(emu, tmp_path):
    locked = {"tasks": {"0": {
        "id": 0, "created_at": "2024-07-18T14:55:02.656354132+02:00", "original_command": "ls",
        "command": "ls", "path": "/tmp", "envs": {}, "group": "default", "dependencies": [],
        "priority": 0, "label": "edit me",
        "status": {"Locked": {"previous_status": {"Queued": {
            "enqueued_at": "2024-07-18T14:55:02.656334442+02:00"}}}}}},
        "groups": {"default": {"status": "Running", "parallel_tasks": 1}}}
    (tmp_path / "locked.json").write_text(json.dumps(locked))
    emu.ok("_emulator", "load", str(tmp_path / "locked.json"))
    task = emu.task(0)
    if emu.v4:
        assert task["status"] == locked["tasks"]["0"]["status"]
    else:
        assert task["status"] == "Locked"
        assert task["enqueued_at"] == "2024-07-18T14:55:02.656334442+02:00"
    emu.ok("_emulator", "restart")
    assert emu.task(0)["status"] == {"Stashed": {"enqueue_at": None}}


def test_wipe_starts_the_daemon_empty(emu):
    emu.ok("group", "add", "g")
    pid_file = emu.ctl / "pid"
    emu.add("--", f"echo $$ > {q(pid_file)}; " + hold(emu.ctl, "w"))
    emu.add("--", "true")
    emu.wait_file(emu.ctl / "started-w")
    pid = int(pid_file.read_text())
    emu.ok("_emulator", "wipe")
    assert emu.ok("status", "--json") == \
        '{"tasks":{},"groups":{"default":{"status":"Running","parallel_tasks":1}}}\n'
    wait_for(lambda: not process_alive(pid), what="the wiped task's process to die")
    assert emu.add("-s", "--", "true") == 0


# -- real state files ------------------------------------------------------------------------------
def test_load_the_4_0_0_state_file(emu):
    real = json.loads(V4_STATE.read_text())
    emu.ok("_emulator", "load", str(V4_STATE))
    state = emu.status()
    assert state["groups"] == real["groups"]
    if emu.v4:
        assert json.dumps(state) == json.dumps(real)  # same content, same key order
    else:
        tasks = state["tasks"]
        assert [kind(tasks[k]) for k in tasks] == \
            ["Done", "Done", "Stashed", "Running", "Queued", "Queued"]
        assert tasks["0"]["status"] == {"Done": "Success"}
        assert tasks["1"]["status"] == {"Done": {"Failed": 2}}
        done = real["tasks"]["1"]["status"]["Done"]
        assert (tasks["1"]["enqueued_at"], tasks["1"]["start"], tasks["1"]["end"]) == \
            (done["enqueued_at"], done["start"], done["end"])
        assert tasks["5"]["enqueued_at"] == \
            real["tasks"]["5"]["status"]["Queued"]["enqueued_at"]
        assert tasks["3"]["start"] == real["tasks"]["3"]["status"]["Running"]["start"]
        for k, task in tasks.items():
            assert list(task) == FIELDS_3
            assert task["created_at"] == real["tasks"][k]["created_at"]
    # The loaded Running task has no process: it holds the slot until killed.
    assert kind(emu.task(4)) == "Queued"
    assert emu.ok("kill", "3") == "Tasks are being killed: 3\n"
    assert result(emu.task(3)) == "Killed"


def test_load_the_2_0_0_state_file(emu):
    real = json.loads(V2_STATE.read_text())
    emu.ok("_emulator", "load", str(V2_STATE))
    state = emu.status()
    assert state["groups"] == real["groups"]
    assert list(state["tasks"]) == list(real["tasks"])
    for k, task in state["tasks"].items():
        assert TS_RE.fullmatch(task["created_at"])  # filled in, as pueue's serde default does
        if emu.v4:
            assert list(task) == FIELDS_4
        else:
            assert task["priority"] == 0 and task["enqueued_at"] is None
            assert {f: v for f, v in task.items()
                    if f not in ("created_at", "enqueued_at", "priority")} == real["tasks"][k]
            assert list(task) == FIELDS_3
    if emu.v4:
        tasks = state["tasks"]
        done = tasks["1"]["status"]["Done"]
        assert (done["start"], done["end"], done["result"]) == (
            real["tasks"]["1"]["start"], real["tasks"]["1"]["end"], "Success")
        assert list(tasks["2"]["status"]) == ["Queued"]
        assert tasks["3"]["status"] == {"Stashed": {"enqueue_at": None}}
        assert tasks["1"]["envs"] == {"PUEUE_WORKER_ID": "0", "PUEUE_GROUP": "test"}
    assert kind(emu.task(2)) == "Queued"  # its group "test" is paused
    assert "settings" not in read_state(emu.state)


def test_load_refuses_what_is_not_a_state_file(emu, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    proc = emu.run("_emulator", "load", str(bad))
    assert proc.returncode == 1 and "cannot load" in proc.stderr
    assert emu.run("_emulator", "load", str(tmp_path / "none.json")).returncode == 1


# -- through the real sshd ------------------------------------------------------------------------
class Remote:
    """A paramiko session to the tests' sshd."""

    def __init__(self, server: SSHServer):
        self.client = paramiko.SSHClient()
        self.client.load_host_keys(str(server.known_hosts))
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.client.connect("127.0.0.1", port=server.port, username=server.user,
                            key_filename=str(server.client_key), look_for_keys=False,
                            allow_agent=False, timeout=30, banner_timeout=30, auth_timeout=30)

    def run(self, command: str) -> tuple[int, str, str]:
        _stdin, stdout, stderr = self.client.exec_command(command, timeout=DEADLINE)
        out = stdout.read().decode()  # EOF only once no process holds the session's pipes
        err = stderr.read().decode()
        return stdout.channel.recv_exit_status(), out, err

    def close(self) -> None:
        self.client.close()


@pytest.fixture(params=VERSIONS)
def remote_host(request, tmp_path):
    server = SSHServer(tmp_path / "sshd").start()
    state = install(server.bin, version=request.param)
    yield server, request.param, state
    stop_tasks(state)
    server.stop()


def test_over_ssh_tasks_outlive_the_session_and_report_back(remote_host, tmp_path):
    server, version, state = remote_host
    work = tmp_path / "remote work"
    work.mkdir()
    r = Remote(server)
    assert r.run("pueue --version") == (0, f"pueue {version}\n", "")
    started = time.monotonic()
    rc, out, err = r.run(f"cd {q(work)} && pueue add -p -l case-1 -- "
                         f"'echo $$ > pid; sleep 300'")
    assert (rc, out, err) == (0, "0\n", "")
    assert time.monotonic() - started < DEADLINE / 2  # the session did not wait for the task
    r.close()
    server.kill_sessions()  # every sshd session process is gone; the task is not
    pid = int(wait_for(lambda: (work / "pid").exists() and (work / "pid").read_text().strip(),
                       what="the remote task's pid"))
    assert process_alive(pid)
    r = Remote(server)
    rc, out, _ = r.run("pueue status --json")
    task = json.loads(out)["tasks"]["0"]
    assert (rc, kind(task), task["label"]) == (0, "Running", "case-1")
    assert task["path"] == str(work.resolve())
    assert f"{server.bin}:" in task["envs"]["PATH"]  # the remote session's environment
    assert r.run("pueue kill 0") == (0, "Tasks are being killed: 0\n", "")
    wait_for(lambda: not process_alive(pid), what="the killed remote task to die")
    rc, out, _ = r.run(f"cd {q(work)} && pueue add -p -- 'exit 3'")
    task_id = int(out)

    def finished():
        _, text, _ = r.run("pueue status --json")
        task = json.loads(text)["tasks"][str(task_id)]
        return task if kind(task) == "Done" else None
    assert result(wait_for(finished, what="the remote task to finish")) == {"Failed": 3}
    rc, out, err = r.run("pueue add -g nope -- true")
    message = "Group nope doesn't exists. Use one of these: [\"default\"]\n"
    assert (rc, out, err) == ((1, "", message) if version.startswith("4") else (1, message, ""))
    r.close()


def test_over_ssh_with_the_openssh_client(remote_host):
    server, version, state = remote_host
    ssh = shutil.which("ssh")
    assert ssh is not None, "the OpenSSH client is missing (.ci/system-deps installs it)"
    base = [ssh, "-p", str(server.port), "-i", str(server.client_key),
            "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=30",
            f"{server.user}@127.0.0.1"]
    proc = subprocess.run(base + ["pueue add -p -- sleep 300"], capture_output=True, text=True,
                          timeout=DEADLINE, stdin=subprocess.DEVNULL)
    assert (proc.returncode, proc.stdout) == (0, "0\n"), proc.stderr
    proc = subprocess.run(base + ["pueue status --json"], capture_output=True, text=True,
                          timeout=DEADLINE, stdin=subprocess.DEVNULL)
    assert kind(json.loads(proc.stdout)["tasks"]["0"]) == "Running"
    assert (state / "task_logs" / "0.log").exists()
