"""The pueue backend against real pueue 3.4.1 and 4.0.4 (pueued per test), over the real sshd.

Faults are produced for real: pueued SIGKILLed or stopped, its state file removed or from the
other major version, `pueue clean`, `pueue reset`, a group removed, the daemon killed between
caseflow's status query and its `pueue add`.
"""

import os
import shlex
import time
from pathlib import Path

import pytest

from caseflow.backends import (
    FAILURE, LOST, NOT_FOUND, RUNNING, SUCCESS, UNREADABLE, JobRef, JobSpec,
)
from caseflow.backends.pueue import DaemonNotRunning, PueueBackend
from caseflow.backends.output import BadOutput
from caseflow.backends.pueue_status import parse_poll, parse_status, task_outcome
from caseflow.config import GroupConfig, TransportConfig
from caseflow.errors import HostError, PermanentError, TransientError
from caseflow.transports.ssh import SSHTransport
from harness import process_alive, wait_for
from pueue_daemon import VERSIONS, PueueDaemon, result_of, status_name
from sshd import SSHServer, transport_settings

GROUPS = (GroupConfig("gpu_a", 2), GroupConfig("gpu_b", 1))
HOSTILE = ["with space", "quote'single", 'quote"double', "$(touch CANARY)", "`touch CANARY`",
           "semi;touch CANARY", "new\nline", "tab\there", "-leading-dash", "café_ünï",
           "glob*?[x]", "back\\slash", "x" * 220]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    server = SSHServer(tmp_path_factory.mktemp("pueuehost")).start()
    yield server
    server.stop()


@pytest.fixture(params=VERSIONS)
def daemon(request, tmp_path):
    d = PueueDaemon(tmp_path / "pueue", request.param).start()
    yield d
    d.close()


@pytest.fixture
def transport(host, tmp_path):
    t = SSHTransport(TransportConfig(**transport_settings(host, tmp_path)))
    yield t
    t.close()


@pytest.fixture
def pueue(daemon, transport):
    """The backend of a host whose `pueue` is the test daemon's client (backend.pueue)."""
    backend = PueueBackend(transport, GROUPS, pueue=str(daemon.client))
    backend.daemon = daemon
    return backend


class Jobs:
    """Case folders and jobs of a test; a held job waits for `release(case_id)`."""

    def __init__(self, root: Path):
        self.root = root
        self.ctl = root / "ctl"
        self.ctl.mkdir(exist_ok=True)

    def spec(self, case_id, command="true", group="gpu_a", env=None, priority=0, hold=False):
        folder = self.root / f"case{case_id}"
        folder.mkdir(exist_ok=True)
        if hold:
            command = (f"while [ ! -e {shlex.quote(str(self.ctl))}/release-{case_id} ]; do "
                       f"sleep 0.05; done; {command}")
        return JobSpec(case_id=case_id, label=f"caseflow-t-{case_id}-1", remote_path=str(folder),
                       group=group, command=command, env=env or {}, priority=priority)

    def release(self, case_id):
        (self.ctl / f"release-{case_id}").touch()


@pytest.fixture
def jobs(tmp_path):
    return Jobs(tmp_path)


def ref(spec, task_id):
    return JobRef(spec.case_id, task_id, spec.label, spec.remote_path)


def outcome(backend, r, wanted, detail=""):
    def check():
        s = backend.status([r])[r.case_id]
        return s.outcome == wanted and detail in s.detail and s
    return wait_for(check, what=f"the task to be {wanted} {detail}")


def started(spec) -> int:
    """The job's process group, from the wrapper's start record (once it runs)."""
    record = Path(spec.remote_path, ".caseflow", "pueue-job")
    return int(wait_for(lambda: record.exists() and record.read_text().split()[1:],
                        what="the job to start")[0])


def alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


# -- groups and submission -----------------------------------------------------------------
def test_version_is_detected_and_groups_are_made_with_their_slots_before_the_first_add(
        pueue, jobs):
    pueue.daemon.run("group", "add", "gpu_b", "-p", "5", check=True)  # one exists, wrong count
    spec = jobs.spec(1, group="gpu_a")
    task = pueue.submit(spec)  # a fresh daemon: group add, then at once the first add to it
    assert pueue.version == pueue.daemon.version
    groups = pueue.daemon.groups()
    assert groups["gpu_a"]["parallel_tasks"] == 2 and groups["gpu_b"]["parallel_tasks"] == 1
    assert pueue.daemon.tasks()[task]["group"] == "gpu_a"
    outcome(pueue, ref(spec, task), SUCCESS)
    commands = pueue.transport.commands
    pueue.prepare()  # once per connection
    assert pueue.transport.commands == commands


def test_submit_run_succeed_with_label_env_and_log(pueue, jobs):
    spec = jobs.spec(1, 'echo "hi $CASEFLOW_CASE_NAME"; pwd', env={"CASEFLOW_CASE_NAME": "x"})
    task = pueue.submit(spec)
    assert task.isdigit()
    status = outcome(pueue, ref(spec, task), SUCCESS)
    assert status.exit_code == 0
    t = pueue.daemon.tasks()[task]
    assert (t["label"], t["group"], t["path"]) == (spec.label, "gpu_a", spec.remote_path)
    log = pueue.job_log(ref(spec, task))
    assert "hi x" in log and spec.remote_path in log


def test_everything_a_case_may_say_reaches_pueue_unchanged(pueue, jobs):
    """Every case name (in the job's environment), each group and priority the case.yaml may
    give, as pueue stores them and as the job sees them."""
    refs = {}
    for i, name in enumerate(HOSTILE):
        group, priority = ("gpu_a", 1000) if i % 2 else ("gpu_b", -1000 + i)
        spec = jobs.spec(100 + i, 'printf "%s" "$CASEFLOW_CASE_NAME" > name.txt', group=group,
                         env={"CASEFLOW_CASE_NAME": name, "CASEFLOW_CASE_ID": str(100 + i)},
                         priority=priority)
        refs[name] = (spec, pueue.submit(spec), group, priority)
    tasks = pueue.daemon.tasks()
    for name, (spec, task, group, priority) in refs.items():
        t = tasks[task]
        assert (t["envs"]["CASEFLOW_CASE_NAME"], t["group"], t["priority"], t["label"]) == \
            (name, group, priority, spec.label)
    for name, (spec, task, _, _) in refs.items():
        outcome(pueue, ref(spec, task), SUCCESS)
        assert Path(spec.remote_path, "name.txt").read_text() == name
    assert not list(Path(jobs.root).rglob("CANARY"))


def test_a_failing_job_reports_its_exit_code(pueue, jobs):
    spec = jobs.spec(2, "exit 7")
    status = outcome(pueue, ref(spec, pueue.submit(spec)), FAILURE)
    assert (status.exit_code, status.detail) == (7, "job exited with code 7")


def test_submit_adopts_the_task_already_added_for_the_label(pueue, jobs):
    spec = jobs.spec(3, "sleep 30")
    first = pueue.submit(spec)
    assert pueue.submit(spec) == first  # as after a crash between `pueue add` and the commit
    labels = [t["label"] for t in pueue.daemon.tasks().values()]
    assert labels.count(spec.label) == 1


def test_an_unknown_group_is_refused_permanently_with_pueues_words(pueue, jobs):
    pueue.manage_groups = False
    with pytest.raises(PermanentError, match="pueue refused the job: Group nowhere doesn't exist"):
        pueue.submit(jobs.spec(30, group="nowhere"))


def test_a_missing_case_folder_is_refused_permanently(pueue, jobs):
    spec = jobs.spec(31)
    os.rmdir(spec.remote_path)
    with pytest.raises(PermanentError, match="case folder is missing"):
        pueue.submit(spec)
    assert pueue.daemon.tasks() == {}


# -- polling -------------------------------------------------------------------------------
def test_polling_many_tasks_is_one_command(pueue, jobs):
    refs = [ref(s, pueue.submit(s)) for s in (jobs.spec(i, "sleep 30") for i in range(10, 16))]
    wait_for(lambda: sum(status_name(t) == "Running" for t in pueue.daemon.tasks().values()) == 2,
             what="two tasks to run")
    before = (pueue.transport.commands, pueue.transport.connects)
    answers = pueue.status(refs)
    assert (pueue.transport.commands - before[0], pueue.transport.connects - before[1]) == (1, 0)
    details = sorted(a.detail for a in answers.values())
    assert details == ["queued"] * 4 + ["running"] * 2  # gpu_a has 2 slots


def test_one_entry_caseflow_cannot_read_is_that_jobs_problem_alone(pueue, daemon, jobs, tmp_path):
    """Real pueue's answer with one task's status changed to a form caseflow does not know."""
    specs = [jobs.spec(40, "true"), jobs.spec(41, "exit 4"), jobs.spec(42, "sleep 30"),
             jobs.spec(43, "true")]
    refs = [ref(s, pueue.submit(s)) for s in specs]
    wait_for(lambda: [status_name(t) for t in daemon.tasks().values()] ==
             ["Done", "Done", "Running", "Done"], what="the tasks to end or run")
    odd = tmp_path / "odd-pueue"
    odd.write_text(f"""#!/bin/sh
if [ "$1 $2" = "status --json" ]; then
  {shlex.quote(str(daemon.client))} status --json | python3 -c '
import json, sys
data = json.load(sys.stdin)
data["tasks"]["{refs[3].task_id}"]["status"] = {{"Exploded": {{"at": "noon"}}}}
print(json.dumps(data))'
else exec {shlex.quote(str(daemon.client))} "$@"; fi
""")
    odd.chmod(0o755)
    pueue.pueue = (str(odd),)
    answers = pueue.status(refs)
    assert answers[43].outcome == UNREADABLE and "Exploded" in answers[43].detail
    assert [answers[i].outcome for i in (40, 41, 42)] == [SUCCESS, FAILURE, RUNNING]
    assert answers[41].exit_code == 4


def test_cancel_kills_a_running_task_and_removes_a_queued_one(pueue, jobs):
    running, queued = jobs.spec(20, "sleep 60", group="gpu_b"), jobs.spec(21, "sleep 60",
                                                                          group="gpu_b")
    r1, r2 = ref(running, pueue.submit(running)), ref(queued, pueue.submit(queued))
    outcome(pueue, r1, RUNNING, "running")
    assert pueue.status([r2])[21].detail == "queued"
    pueue.cancel(r2)
    assert pueue.status([r2])[21].outcome == NOT_FOUND  # removed from the queue, never ran
    pgid = started(running)
    pueue.cancel(r1)
    assert "killed" in outcome(pueue, r1, FAILURE).detail
    assert not alive(pgid)
    pueue.cancel(r1)  # already ended: nothing to do, no error


def test_stashed_paused_and_paused_group_tasks_are_shown_as_such(pueue, daemon, jobs):
    own, blocker = jobs.spec(50, "sleep 60", group="gpu_a"), jobs.spec(53, "sleep 60")
    stashed, in_group = jobs.spec(51, "true", group="gpu_a"), jobs.spec(52, "sleep 60",
                                                                        group="gpu_b")
    r_own, r_blocker, r_stash, r_group = (ref(s, pueue.submit(s))
                                          for s in (own, blocker, stashed, in_group))
    outcome(pueue, r_own, RUNNING, "running")
    outcome(pueue, r_blocker, RUNNING, "running")  # gpu_a's 2 slots: the third one queues
    outcome(pueue, r_group, RUNNING, "running")
    daemon.run("stash", r_stash.task_id, check=True)
    daemon.run("pause", r_own.task_id, check=True)
    daemon.run("pause", "-g", "gpu_b", check=True)
    assert outcome(pueue, r_own, RUNNING, "paused").detail == "paused"
    answers = pueue.status([r_own, r_stash, r_group])
    assert answers[51].detail == "stashed"
    assert answers[52].detail.endswith("; pueue group gpu_b is PAUSED")
    notice = pueue.notice()
    assert "gpu_b PAUSED" in notice and "1 task(s) STASHED" in notice and \
        "1 task(s) PAUSED" in notice, notice
    daemon.run("start", "-g", "gpu_b", check=True)
    daemon.run("start", r_own.task_id, check=True)
    daemon.run("enqueue", r_stash.task_id, check=True)
    pueue.cancel(r_blocker)
    outcome(pueue, r_stash, SUCCESS)
    outcome(pueue, r_own, RUNNING, "running")
    assert outcome(pueue, r_group, RUNNING, "running").detail == "running"
    assert pueue.notice() is None


# -- job logs, stopping jobs, lost replies, reused ids -------------------------------------------
NOT_UTF8 = (r"printf 'before\377after\n'; printf 'err\376\n' >&2; "
            r"printf 'caf\303\251 \342\202\254\n'",
            b"before\xffafter\nerr\xfe\ncaf\xc3\xa9 \xe2\x82\xac\n")


def test_a_log_that_is_not_utf8_comes_home_byte_for_byte(pueue, daemon, jobs):
    """pueue 3.4.1 and 4.0.4 cannot give such a log (`pueue log --json` prints "(Pueue
    error) ... stream did not contain valid UTF-8" in its place, exit 0): the wrapper writes the
    job's output to .caseflow/job.log, which comes home with the results (log_file) and is
    what job_log reads, byte for byte."""
    command, written = NOT_UTF8
    spec = jobs.spec(110, command)
    r = ref(spec, pueue.submit(spec))
    outcome(pueue, r, SUCCESS)
    text = pueue.job_log(r)
    assert "(Pueue error)" not in text, text
    assert text.encode("utf-8", "surrogateescape") == written
    assert pueue.log_file(r) == ".caseflow/job.log"
    assert Path(spec.remote_path, pueue.log_file(r)).read_bytes() == written
    # pueue's own log of the task only says where the output is (and reads as UTF-8)
    said = daemon.run("log", r.task_id, "--json", "--full", check=True).stdout
    assert ".caseflow/job.log" in said and "(Pueue error)" not in said


# a job that catches TERM and takes 3 s to end (its foreground sleep gets the TERM too)
SLOW_TERM = ("trap 'echo TERM > got-term; sleep 3; echo done > term-done; exit 0' TERM; "
             "touch started; while :; do sleep 0.05; done")


def _running(spec, pueue, r) -> int:
    pgid = started(spec)
    wait_for(lambda: Path(spec.remote_path, "started").exists(), what="the job's trap to be set")
    outcome(pueue, r, RUNNING, "running")
    return pgid


def test_cancel_sends_term_and_the_job_runs_until_its_processes_are_gone(pueue, daemon, jobs):
    """`pueue kill` is SIGKILL to the task's process group (3.4.1 and 4.0.4); caseflow's stop is
    SIGTERM. The TERM ends the wrapper at once and pueue marks the task Killed while the job
    lives on for 3 s: all that time the job is RUNNING, then it has ended."""
    spec = jobs.spec(120, SLOW_TERM)
    r = ref(spec, pueue.submit(spec))
    pgid = _running(spec, pueue, r)
    began = time.monotonic()
    pueue.cancel(r)
    wait_for(lambda: Path(spec.remote_path, "got-term").exists(), what="the job to get SIGTERM")
    pueue_said_done, polls = False, 0
    while alive(pgid):
        status = pueue.status([r])[120]
        if alive(pgid):  # alive after the poll: it was alive during it
            assert status.outcome == RUNNING, (time.monotonic() - began, status)
            polls += 1
        task = daemon.tasks()[r.task_id]
        pueue_said_done = pueue_said_done or (status_name(task) == "Done" and alive(pgid))
        time.sleep(0.1)
    assert time.monotonic() - began >= 2.5 and Path(spec.remote_path, "term-done").exists()
    assert polls >= 3
    assert pueue_said_done, "pueue did not mark the task ended while its job still ran"
    assert result_of(daemon.tasks()[r.task_id]) == "Killed"
    assert "killed" in outcome(pueue, r, FAILURE).detail
    pueue.cancel(r)  # it has ended: nothing to do, no error


# a job that counts the TERMs it gets and goes on (its sleep is a child: TERM ends that only)
COUNT_TERM = ("trap 'echo TERM >> terms' TERM; touch started; "
              "while [ ! -e stop ]; do sleep 0.05; done")


def test_a_cancel_sent_again_after_a_lost_reply_sends_no_second_term(pueue, daemon, jobs):
    """The transport sends a stop again when its reply was lost: the job's TERM handler (a
    checkpoint) must run once, as a second TERM can cut it short (the randomized test's remote
    profile found the handler run twice)."""
    spec = jobs.spec(121, COUNT_TERM)
    r = ref(spec, pueue.submit(spec))
    pgid = _running(spec, pueue, r)
    terms = Path(spec.remote_path, "terms")
    try:
        pueue.cancel(r)
        wait_for(terms.exists, what="the job to get SIGTERM")
        pueue.cancel(r)  # again: the first one's reply was lost
        pueue.cancel(r)
        assert terms.read_text() == "TERM\n"
        pueue.cancel(r, force=True)  # a KILL always goes through
        wait_for(lambda: not alive(pgid), what="the job to be killed")
    finally:
        Path(spec.remote_path, "stop").touch()


def test_cancel_force_kills_the_whole_process_group_at_once(pueue, daemon, jobs):
    """force: SIGKILL, to a running task and to a job that is still ending after a TERM (pueue
    has marked that one Killed already: its processes are killed from the wrapper's record)."""
    fresh, ending = jobs.spec(121, SLOW_TERM), jobs.spec(122, SLOW_TERM)
    r_fresh, r_ending = ref(fresh, pueue.submit(fresh)), ref(ending, pueue.submit(ending))
    pg_fresh, pg_ending = _running(fresh, pueue, r_fresh), _running(ending, pueue, r_ending)
    pueue.cancel(r_ending)
    wait_for(lambda: Path(ending.remote_path, "got-term").exists(), what="the TERM")
    wait_for(lambda: status_name(daemon.tasks()[r_ending.task_id]) == "Done",
             what="pueue to mark the task ended")
    assert alive(pg_ending) and pueue.status([r_ending])[122].outcome == RUNNING
    began = time.monotonic()
    pueue.cancel(r_ending, force=True)
    pueue.cancel(r_fresh, force=True)
    wait_for(lambda: not alive(pg_ending) and not alive(pg_fresh), timeout=1.5,
             what="the jobs' processes to be killed")
    assert time.monotonic() - began < 1.5
    assert not Path(ending.remote_path, "term-done").exists()  # its trap did not finish
    assert not Path(fresh.remote_path, "got-term").exists()  # SIGKILL, no TERM
    assert "killed" in outcome(pueue, r_fresh, FAILURE).detail
    assert "killed" in outcome(pueue, r_ending, FAILURE).detail


def test_cancel_of_a_paused_task_delivers_the_term(pueue, daemon, jobs):
    """A paused task's processes are stopped (SIGSTOP): the TERM reaches them with a CONT."""
    spec = jobs.spec(123, SLOW_TERM)
    r = ref(spec, pueue.submit(spec))
    pgid = _running(spec, pueue, r)
    daemon.run("pause", r.task_id, check=True)
    outcome(pueue, r, RUNNING, "paused")
    pueue.cancel(r)
    wait_for(lambda: Path(spec.remote_path, "got-term").exists(), what="the job to get SIGTERM")
    assert "killed" in outcome(pueue, r, FAILURE).detail
    assert not alive(pgid) and Path(spec.remote_path, "term-done").exists()


class LostReply:
    """A transport whose every `run_once` (a submit) runs, and then its reply is lost."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run_once(self, argv, *args, **kwargs):
        self.inner.run_once(argv, *args, **kwargs)
        raise TransientError("the connection was lost before the reply came")


def test_a_job_whose_task_id_was_never_stored_is_found_stopped_and_polled_by_its_label(
        pueue, daemon, jobs, transport):
    """The reply to a submit was lost: the store has no task id (task_id ""). status reports the
    task's real state, find gives its id, cancel stops it: a running one gets TERM, a queued one
    leaves the queue and never runs."""
    lossy = PueueBackend(LostReply(transport), GROUPS, pueue=str(daemon.client))
    blocker = jobs.spec(130, "sleep 60", group="gpu_b")
    r_blocker = ref(blocker, pueue.submit(blocker))
    outcome(pueue, r_blocker, RUNNING, "running")
    running, waiting = jobs.spec(131, SLOW_TERM), jobs.spec(132, "touch ran", group="gpu_b")
    for spec in (running, waiting):
        with pytest.raises(TransientError, match="reply"):
            lossy.submit(spec)
    r_run, r_wait = ref(running, ""), ref(waiting, "")
    by_label = {t["label"]: tid for tid, t in daemon.tasks().items()}
    pgid = _running(running, pueue, r_run)
    answers = pueue.status([r_run, r_wait])
    assert (answers[131].outcome, answers[131].detail) == (RUNNING, "running"), answers[131]
    assert (answers[132].outcome, answers[132].detail) == (RUNNING, "queued"), answers[132]
    assert pueue.find(r_run) == by_label[running.label]
    assert pueue.find(r_wait) == by_label[waiting.label]
    assert pueue.find(ref(jobs.spec(133), "")) is None  # never submitted
    pueue.cancel(r_wait)
    assert waiting.label not in [t["label"] for t in daemon.tasks().values()]
    assert pueue.status([r_wait])[132].outcome == NOT_FOUND
    pueue.cancel(r_run)
    wait_for(lambda: Path(running.remote_path, "got-term").exists(), what="the TERM")
    assert pueue.status([r_run])[131].outcome == RUNNING and alive(pgid)
    assert "killed" in outcome(pueue, r_run, FAILURE).detail
    assert not alive(pgid)
    pueue.cancel(r_blocker)
    outcome(pueue, r_blocker, FAILURE)
    assert not Path(waiting.remote_path, "ran").exists()


class RepeatedAfterLostReply:
    """A transport that, once, loses the reply to the command that stops a job and sends it
    again, as the SSH transport's `run` does (tenacity), after `meanwhile()` happened."""

    def __init__(self, inner, meanwhile):
        self.inner, self.meanwhile, self.repeated = inner, meanwhile, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, argv, *args, **kwargs):
        res = self.inner.run(argv, *args, **kwargs)
        acts = list(argv[1:2]) in (["kill"], ["remove"]) or "caseflow-pueue-cancel" in argv
        if acts and not self.repeated:
            self.repeated.append(list(argv))
            self.meanwhile()
            res = self.inner.run(argv, *args, **kwargs)
        return res


@pytest.mark.parametrize("state", ["queued", "running"])
def test_a_stop_repeated_after_a_lost_reply_leaves_the_task_that_got_its_id_alone(
        pueue, daemon, jobs, transport, state):
    """Task A of one case is removed from the queue (queued) or killed and cleaned (running);
    pueue gives its id to task B of another case; then the transport sends A's stop again. B
    must go on: pueue's task is picked by label in the very command that acts."""
    group = "gpu_b" if state == "queued" else "gpu_a"
    if state == "queued":  # gpu_b has one slot: A and B wait behind this one
        blocker = jobs.spec(140, "sleep 60", group="gpu_b")
        outcome(pueue, ref(blocker, pueue.submit(blocker)), RUNNING, "running")
    a, b = jobs.spec(141, "sleep 60", group=group), jobs.spec(142, "sleep 60", group=group)
    r_a = ref(a, pueue.submit(a))
    outcome(pueue, r_a, RUNNING, state)
    r_b: list[JobRef] = []

    def meanwhile():  # A leaves pueue, and B (another case, another worker) gets its id
        wait_for(lambda: r_a.task_id not in daemon.tasks() or
                 status_name(daemon.tasks()[r_a.task_id]) == "Done", what="A to be stopped")
        daemon.run("clean", check=True)
        wait_for(lambda: r_a.task_id not in daemon.tasks(), what="A to leave pueue")
        r_b.append(ref(b, pueue.submit(b)))
        outcome(pueue, r_b[0], RUNNING, state)

    stopper = PueueBackend(RepeatedAfterLostReply(transport, meanwhile), GROUPS,
                           pueue=str(daemon.client))
    stopper.cancel(r_a)
    assert stopper.transport.repeated, "no stop command was sent"
    time.sleep(1)  # that nothing happens to B can only be seen after a while (3.x kills async)
    assert r_b[0].task_id == r_a.task_id  # pueue reused the id
    task = daemon.tasks().get(r_b[0].task_id)
    assert task is not None and task["label"] == b.label, task
    assert status_name(task) == state.capitalize(), task
    assert outcome(pueue, r_b[0], RUNNING, state).detail == state
    if state == "running":
        assert alive(started(b))


# -- backend.pueue: a command with arguments --------------------------------------------------
def _own_config(daemon, tmp_path) -> Path:
    """A copy of the daemon's config file (the same socket) at a path a shell would split,
    expand and substitute: reaching pueue whole shows that every word was quoted."""
    path = tmp_path / "pueue conf's $HOME `touch CANARY`" / "pueue.yml"
    path.parent.mkdir()
    path.write_text(daemon.config.read_text())
    return path


def test_a_client_with_its_own_config_file_reaches_its_daemon_in_every_command(
        daemon, transport, jobs, tmp_path):
    """backend.pueue `pueue -c FILE` (a pueued started with its own config, `pueued -c FILE`),
    with the real client of the daemon's version: groups, submit, the poll, find, the log,
    cancel and check all reach that daemon."""
    words = [str(daemon.pueue), "-c", str(_own_config(daemon, tmp_path))]
    backend = PueueBackend(transport, GROUPS, pueue=words)
    done = jobs.spec(70, "echo hello from pueue")
    r_done = ref(done, backend.submit(done))
    assert daemon.tasks()[r_done.task_id]["label"] == done.label
    assert outcome(backend, r_done, SUCCESS).exit_code == 0
    assert "hello from pueue" in backend.job_log(r_done)
    held = jobs.spec(71, "sleep 60")
    r_held = ref(held, backend.submit(held))
    pgid = started(held)
    assert backend.find(JobRef(71, "", held.label, held.remote_path)) == r_held.task_id
    backend.cancel(r_held)
    assert "killed" in outcome(backend, r_held, FAILURE).detail
    wait_for(lambda: not alive(pgid), what="the cancelled job to end")
    assert all(ok for ok, _ in backend.check()), backend.check()
    assert f"pueue client {shlex.join(words)}: pueue {daemon.version}" in \
        [text for _, text in backend.check()]
    assert daemon.groups()["gpu_a"]["parallel_tasks"] == 2
    assert not list(tmp_path.rglob("CANARY"))


def test_backend_pueue_from_the_config_is_split_like_a_shell_and_runs_a_case(daemon, host, ws):
    """The same as a configuration says it: `caseflow check` and a case to success."""
    conf = _own_config(daemon, ws.root)
    command = f"{shlex.quote(str(daemon.pueue))} -c {shlex.quote(str(conf))}"
    ws.write_config(transport=transport_settings(host, ws.remote),
                    backend={"kind": "pueue", "command": "echo done > out.txt",
                             "pueue": command})
    assert ws.config().hosts[0].backend.pueue == (str(daemon.pueue), "-c", str(conf))
    proc = ws.cli("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok    pueue daemon answers" in proc.stdout
    ws.start()
    ws.drop_case("with its own config")
    row = ws.wait_state("with its own config", "success", "failure", "not_found")
    assert row.state == "success", row.reason
    assert daemon.tasks()[row.task_id]["label"].startswith("caseflow-")
    assert not list(ws.root.rglob("CANARY"))


# -- what happens to pueued, for real ------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_pueued_not_running_at_first_contact_is_a_host_problem(version, transport, jobs,
                                                              tmp_path):
    daemon = PueueDaemon(tmp_path / "never-started", version)  # no state, no secret yet
    try:
        backend = PueueBackend(transport, GROUPS, pueue=str(daemon.client))
        spec = jobs.spec(60)
        with pytest.raises(DaemonNotRunning, match="pueue daemon not running") as err:
            backend.submit(spec)
        assert isinstance(err.value, HostError)  # the engine pauses the host, fails no case
        with pytest.raises(DaemonNotRunning):
            backend.probe()
        daemon.start()
        backend.probe()
        outcome(backend, ref(spec, backend.submit(spec)), SUCCESS)
    finally:
        daemon.close()


def test_pueued_stopped_later_is_a_host_problem_until_it_runs_again(pueue, daemon, jobs):
    spec = jobs.spec(61)
    r = ref(spec, pueue.submit(spec))
    outcome(pueue, r, SUCCESS)
    daemon.stop()
    with pytest.raises(DaemonNotRunning, match="pueue daemon not running"):
        pueue.status([r])
    with pytest.raises(DaemonNotRunning):
        pueue.submit(jobs.spec(62))
    daemon.start()
    assert pueue.status([r])[61].outcome == SUCCESS


def test_pueued_killed_between_status_and_add_is_transient_and_adds_once(pueue, daemon, jobs):
    spec = jobs.spec(63)
    pueue.prepare()
    daemon.kill_before_add()
    with pytest.raises(DaemonNotRunning):
        pueue.submit(spec)  # the status query answered; the add found no daemon
    daemon.reap()
    daemon.start()
    task = pueue.submit(spec)
    outcome(pueue, ref(spec, task), SUCCESS)
    assert [t["label"] for t in daemon.tasks().values()] == [spec.label]


def test_pueued_sigkilled_while_a_job_runs_keeps_its_slot_until_its_processes_end(
        pueue, daemon, jobs):
    """The restarted daemon marks the task Killed, but its process group runs on: the case
    stays running until the job really ends, then its own exit record decides."""
    spec, other = jobs.spec(70, "exit 0", hold=True), jobs.spec(71, "sleep 60", hold=False)
    r, r_other = ref(spec, pueue.submit(spec)), ref(other, pueue.submit(other))
    pgid, other_pgid = started(spec), started(other)
    daemon.kill()
    daemon.start()
    assert result_of(daemon.tasks()[r.task_id]) == "Killed" and alive(pgid)
    status = pueue.status([r])[70]
    assert status.outcome == RUNNING and status.detail.startswith(
        "pueue lost track of the task; waiting for its processes to end"), status
    assert "lost track" in pueue.notice()
    pueue.cancel(r_other)  # pueue cannot stop it any more: caseflow kills its process group
    wait_for(lambda: not alive(other_pgid), what="the lost job to be killed")
    # gone without an exit code under a daemon that is not the one that started it: LOST to
    # the backend; the engine makes the end of a job it asked to stop its cancel
    assert outcome(pueue, r_other, LOST)
    jobs.release(70)
    status = outcome(pueue, r, SUCCESS)
    assert "the job's own record" in status.detail and status.exit_code == 0
    assert pueue.notice() is None


def test_a_job_whose_daemon_and_processes_were_killed_is_lost_and_not_started_again(
        pueue, daemon, jobs):
    """A reboot, short of rebooting: pueued SIGKILLed, the task's process group killed, pueued
    started again. pueue marks the task Killed and starts nothing by itself (a group with
    queued tasks comes back paused); no exit record, no process, and the daemon that started it
    is gone: LOST, with the cause. A job of the same group still queued stays queued."""
    spec, queued = jobs.spec(72, "sleep 60", group="gpu_b"), jobs.spec(73, "true", group="gpu_b")
    r, r_queued = ref(spec, pueue.submit(spec)), ref(queued, pueue.submit(queued))
    pgid = started(spec)
    record = Path(spec.remote_path, ".caseflow", "pueue-job").read_text()
    daemon.kill()
    os.killpg(pgid, 9)
    wait_for(lambda: not alive(pgid), what="the job's processes to be gone")
    daemon.start()
    status = pueue.status([r])[72]
    assert status.outcome == LOST, status
    assert "pueue daemon that started it no longer runs" in status.detail
    assert pueue.transport.name in status.detail
    assert "pueue marked the task Killed" in status.detail
    tasks = daemon.tasks()
    assert status_name(tasks[r.task_id]) == "Done" and result_of(tasks[r.task_id]) == "Killed"
    assert status_name(tasks[r_queued.task_id]) == "Queued"
    assert daemon.groups()["gpu_b"]["status"] == "Paused"
    assert Path(spec.remote_path, ".caseflow", "pueue-job").read_text() == record  # not rerun
    assert not Path(queued.remote_path, ".caseflow", "pueue-job").exists()
    assert daemon.task_processes() == []
    assert not Path(spec.remote_path, ".caseflow", "pueue-exit").exists()


def test_a_job_that_exited_while_its_daemon_was_down_ends_by_its_exit_record(
        pueue, daemon, jobs):
    """The exit record is read first: a job that wrote its exit code is never LOST, whatever
    happened to the daemon. Exit 3 is the job's failure."""
    spec = jobs.spec(74, "exit 3", hold=True)
    r = ref(spec, pueue.submit(spec))
    pgid = started(spec)
    daemon.kill()
    jobs.release(74)
    wait_for(lambda: not alive(pgid), what="the job to end")
    daemon.start()
    status = outcome(pueue, r, FAILURE)
    assert status.exit_code == 3 and "the job's own record" in status.detail


def test_pueue_kill_under_a_running_daemon_is_the_jobs_end_not_lost(pueue, daemon, jobs):
    """Someone's `pueue kill` on the host: the daemon that started the job still runs, so its
    end is the job's (FAILURE, no rerun), as is one that exits 3."""
    spec, failing = jobs.spec(75, "sleep 60"), jobs.spec(76, "exit 3")
    r, r_failing = ref(spec, pueue.submit(spec)), ref(failing, pueue.submit(failing))
    pgid = started(spec)
    daemon.run("kill", r.task_id, check=True)
    wait_for(lambda: not alive(pgid), what="pueue kill to end the job")
    status = outcome(pueue, r, FAILURE)
    assert status.detail.startswith("killed"), status
    assert (outcome(pueue, r_failing, FAILURE).exit_code) == 3


def _stray(jobs, case_id, trap=""):
    """A command that starts a helper outside the job's process group (setsid, as
    Popen(start_new_session=True) does), writes its pid to ctl/stray-ID and waits to be
    released; `trap` is put before the helper's sleep (e.g. `trap '' TERM`)."""
    pid_file = jobs.ctl / f"stray-{case_id}"
    helper = f"{trap} exec sleep 600" if trap else "exec sleep 600"
    command = (f"setsid sh -c {shlex.quote(helper)} > /dev/null 2>&1 < /dev/null & "
               f"echo $! > {shlex.quote(str(pid_file))}")
    return command, pid_file


def _stray_pid(pid_file: Path) -> int:
    return int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(),
                        what="the helper's pid"))


def test_a_helper_left_running_outside_the_group_is_ended_before_the_job_ends(
        pueue, daemon, jobs):
    """A job that exits 0 but leaves a helper running outside its process group (setsid, on
    its GPU): the wrapper TERMs it (and KILLs one that ignores TERM, after 10 s) before it
    writes the exit code, so the case ends, and its slot is free, only once nothing of the job
    runs. The helper carries the job's label (CASEFLOW_JOB, given by `pueue add`)."""
    command, pid_file = _stray(jobs, 90)
    stubborn, stubborn_file = _stray(jobs, 91, trap="trap '' TERM;")
    spec, spec_stubborn = jobs.spec(90, command), jobs.spec(91, stubborn)
    r, r_stubborn = ref(spec, pueue.submit(spec)), ref(spec_stubborn, pueue.submit(spec_stubborn))
    stray, stray_stubborn = _stray_pid(pid_file), _stray_pid(stubborn_file)
    try:
        assert os.getpgid(stray) != started(spec)
        environ = Path(f"/proc/{stray_stubborn}/environ").read_bytes().split(b"\0")
        assert f"CASEFLOW_JOB={spec_stubborn.label}".encode() in environ
        status = outcome(pueue, r, SUCCESS)
        assert status.exit_code == 0 and not process_alive(stray)
        # the one that ignores TERM is KILLed after 10 s; until then the job runs
        def ended():
            status = pueue.status([r_stubborn])[91]
            if status.outcome != RUNNING:
                assert not process_alive(stray_stubborn), "it ended while its helper ran"
            return status.outcome == SUCCESS
        wait_for(ended, what="the job with a helper that ignores TERM to end")
    finally:
        for pid in (stray, stray_stubborn):
            if process_alive(pid):
                os.kill(pid, 9)


def test_a_cancel_reaches_the_processes_that_left_the_group(pueue, daemon, jobs):
    """caseflow cancel (TERM through pueue, or --force) also signals the job's processes
    outside its process group (they carry its label); the job runs until they are gone."""
    command, pid_file = _stray(jobs, 92)
    spec = jobs.spec(92, command + "; sleep 600")
    r = ref(spec, pueue.submit(spec))
    stray = _stray_pid(pid_file)
    try:
        assert pueue.status([r])[92].outcome == RUNNING
        pueue.cancel(r)
        wait_for(lambda: not process_alive(stray), what="the TERM to reach the helper")
        assert outcome(pueue, r, FAILURE)
    finally:
        if process_alive(stray):
            os.kill(stray, 9)


@pytest.mark.parametrize("loss", ["removed", "corrupted"])
def test_pueued_restarted_with_its_state_lost(pueue, daemon, jobs, loss):
    """As after an upgrade: stopped (its tasks killed), the state file gone or unreadable.
    The groups come back before the next add; the running case's task is not found."""
    held = jobs.spec(80, "sleep 60", group="gpu_b")
    r = ref(held, pueue.submit(held))
    started(held)  # its start record written: the job is known to have run
    daemon.stop()
    if loss == "removed":
        daemon.state_file.unlink()
    else:
        daemon.state_file.write_text(daemon.state_file.read_text()[:50])
    daemon.start()
    assert daemon.tasks() == {} and set(daemon.groups()) == {"default"}
    status = pueue.status([r])[80]  # stopped by the daemon's own stop: the infrastructure's
    assert status.outcome == LOST and "no longer knows" in status.detail, status
    new = jobs.spec(81, "true", group="gpu_b")
    task = pueue.submit(new)
    assert daemon.groups()["gpu_b"]["parallel_tasks"] == 1
    assert daemon.groups()["gpu_a"]["parallel_tasks"] == 2
    outcome(pueue, ref(new, task), SUCCESS)


def test_a_state_file_of_the_other_major_version_starts_pueued_empty(daemon, tmp_path):
    """pueue's own state files (tests/data/pueue): the daemon of the other major version cannot
    read them and starts empty (caseflow then sets its groups up again)."""
    data = Path(__file__).resolve().parent / "data" / "pueue"
    own, other = ("v2.0.0_state.json", "v4.0.0_state.json") if daemon.version < "4" else \
        ("v4.0.0_state.json", "v2.0.0_state.json")
    daemon.stop()
    daemon.state_file.write_text((data / other).read_text())
    daemon.start()
    assert daemon.tasks() == {}
    daemon.stop()
    daemon.state_file.write_text((data / own).read_text())
    daemon.start()
    tasks = daemon.tasks()
    assert tasks, f"pueue {daemon.version} did not load {own}"


def test_pueue_clean_reset_and_a_removed_group(pueue, daemon, jobs):
    """`pueue clean` after the job ended: its own record still says how it ended. `pueue
    reset` kills and forgets a running task: not found. A removed group comes back."""
    done = jobs.spec(90, "exit 3", group="gpu_a")
    r_done = ref(done, pueue.submit(done))
    outcome(pueue, r_done, FAILURE)
    daemon.run("clean", check=True)
    status = pueue.status([r_done])[90]
    assert (status.outcome, status.exit_code) == (FAILURE, 3) and \
        "pueue no longer knows task" in status.detail
    reused = jobs.spec(91, "sleep 60", group="gpu_b")
    r_reused = ref(reused, pueue.submit(reused))
    assert r_reused.task_id == r_done.task_id  # pueue reuses the id; the label tells them apart
    assert pueue.status([r_done])[90].exit_code == 3
    pgid = started(reused)
    daemon.run("reset", "--force", check=True)
    wait_for(lambda: daemon.tasks() == {}, what="pueue reset to forget the tasks")
    assert not alive(pgid)
    status = pueue.status([r_reused])[91]
    assert status.outcome == NOT_FOUND, status
    daemon.run("group", "remove", "gpu_b", check=True)
    wait_for(lambda: "gpu_b" not in daemon.groups(), what="the group to be removed")
    new = jobs.spec(92, "true", group="gpu_b")
    outcome(pueue, ref(new, pueue.submit(new)), SUCCESS)
    assert daemon.groups()["gpu_b"]["parallel_tasks"] == 1


def test_a_paused_group_after_a_daemon_restart_is_reported(pueue, daemon, jobs):
    running, waiting = jobs.spec(95, "sleep 60", group="gpu_b"), jobs.spec(96, "true",
                                                                          group="gpu_b")
    r1, r2 = ref(running, pueue.submit(running)), ref(waiting, pueue.submit(waiting))
    outcome(pueue, r1, RUNNING, "running")
    started(running)
    daemon.stop()   # pueued kills its tasks on SIGTERM ...
    daemon.start()  # ... and pauses groups with queued tasks when it starts again
    answers = pueue.status([r1, r2])
    assert answers[95].outcome == LOST and "marked the task Killed" in answers[95].detail
    assert answers[96].outcome == RUNNING and "gpu_b is PAUSED" in answers[96].detail
    assert "gpu_b" in pueue.notice() and "PAUSED" in pueue.notice()


# -- reading pueue's answers (canned: the forms real pueue prints, per FORMAT.md) ---------------
@pytest.mark.parametrize("status, expected", [
    ("Queued", (RUNNING, "queued")), ("Running", (RUNNING, "running")),
    ("Locked", (RUNNING, "locked")), ("Paused", (RUNNING, "paused")),
    ({"Stashed": {"enqueue_at": None}}, (RUNNING, "stashed")),
    ({"Stashed": {"enqueue_at": "2026-01-01T00:00:00Z"}},
     (RUNNING, "stashed until 2026-01-01T00:00:00Z")),
    ({"Done": "Success"}, (SUCCESS, "exit code 0")),
    ({"Done": {"Failed": 3}}, (FAILURE, "job exited with code 3")),
    ({"Done": "Killed"}, (FAILURE, "killed (by pueue kill, pueue reset or a pueue daemon "
                                   "restart)")),
    ({"Done": {"FailedToSpawn": "no dir"}}, (FAILURE, "pueue could not start the job: no dir")),
    ({"Done": "Errored"}, (FAILURE, "pueue reports the task as errored")),
    ({"Done": "DependencyFailed"}, (FAILURE, "a task it depended on failed")),
    ({"Queued": {"enqueued_at": "2026-01-01T00:00:00.123456789Z"}}, (RUNNING, "queued")),
    ({"Running": {"enqueued_at": "x", "start": "y"}}, (RUNNING, "running")),
    ({"Paused": {"enqueued_at": "x", "start": "y"}}, (RUNNING, "paused")),
    ({"Locked": {"previous_status": "Queued"}}, (RUNNING, "locked")),
    ({"Done": {"enqueued_at": "x", "start": "y", "end": "z", "result": "Success"}},
     (SUCCESS, "exit code 0")),
    ({"Done": {"enqueued_at": "x", "start": "y", "end": "z", "result": {"Failed": 2}}},
     (FAILURE, "job exited with code 2")),
])
def test_task_status_mapping_3x_and_4x(status, expected):
    got = task_outcome({"id": 1, "status": status})
    assert (got.outcome, got.detail) == expected


@pytest.mark.parametrize("status", [{"Exploded": 1}, "Sleeping", None, 7, {"Done": "Vanished"},
                                    {"Done": {"Failed": "x"}}, {"Queued": {}, "Running": {}}])
def test_a_task_status_caseflow_does_not_know_is_unreadable_for_that_task(status):
    got = task_outcome({"id": 4, "status": status})
    assert got.outcome == UNREADABLE and "task 4 in a form caseflow does not know" in got.detail


@pytest.mark.parametrize("text", ["", "garbage", '{"tasks": ', '{"groups": {}}', "[1, 2]"])
def test_an_answer_that_is_not_pueues_json_is_bad_output(text):
    with pytest.raises(BadOutput):
        parse_status(text)
    with pytest.raises(BadOutput):
        parse_poll(f"@@caseflow status\n{text}\n@@caseflow end\n", 0)


def test_a_poll_answer_cut_short_is_bad_output():
    head = '@@caseflow status\n{"tasks": {}, "groups": {}}\n@@caseflow job 0 none\n'
    assert parse_poll(head + "@@caseflow end\n", 1)[1] == [("none", None)]
    with pytest.raises(BadOutput, match="ended early"):
        parse_poll(head, 1)


def test_a_gone_job_whose_daemon_is_gone_is_lost_and_a_live_one_is_not():
    """`@@caseflow daemon N gone` marks a job whose group is gone (or only zombies) as lost; a
    group with a live process stays alive whatever is said of its daemon."""
    text = ('@@caseflow status\n{"tasks": {}, "groups": {}}\n@@caseflow job 0 gone\n'
            '@@caseflow job 1 41\n@@caseflow job 2 42\n@@caseflow job 3 gone\n'
            '@@caseflow live 42\n@@caseflow daemon 0 gone\n@@caseflow daemon 1 gone\n'
            '@@caseflow daemon 2 gone\n@@caseflow end\n')
    assert [procs for procs, _ in parse_poll(text, 4)[1]] == ["lost", "lost", "alive", "gone"]


def test_a_gone_job_that_had_outlived_its_daemon_is_its_own_end_not_lost():
    """`@@caseflow outlived N` (its folder says a poll saw it alive under a later pueued): gone,
    it is not lost, whatever is said of its daemon; alive, it stays alive."""
    text = ('@@caseflow status\n{"tasks": {}, "groups": {}}\n@@caseflow job 0 gone\n'
            '@@caseflow job 1 gone\n@@caseflow job 2 alive\n@@caseflow outlived 0\n'
            '@@caseflow daemon 1 gone\n@@caseflow outlived 2\n@@caseflow end\n')
    assert [procs for procs, _ in parse_poll(text, 3)[1]] == ["outlived", "lost", "alive"]


def test_an_exit_record_that_names_the_job_but_holds_no_exit_code_is_kept_as_said():
    """parse_poll gives the record's text; the backend then calls the job UNREADABLE (when
    pueue no longer knows the task: tests/test_backend_contract.py)."""
    head = '@@caseflow status\n{"tasks": {}, "groups": {}}\n@@caseflow job 0 gone\n'
    for said, read in (("7", 7), ("-1", -1), ("seven", "seven"), ("", ""), ("1 2", "1 2")):
        text = head + f"@@caseflow exit 0 {said}\n@@caseflow end\n"
        assert parse_poll(text, 1)[1] == [("gone", read)]


def test_caseflow_check_runs_the_client_and_asks_the_daemon(daemon, host, ws):
    """`caseflow check` on a pueue host: the client's version, the daemon's answer, the groups
    caseflow will make; then the daemon stopped, then a client that is not there."""
    backend = {"kind": "pueue", "command": "true", "pueue": str(daemon.client)}
    ws.write_config(transport=transport_settings(host, ws.remote), backend=backend)
    proc = ws.cli("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok    pueue client {daemon.client}: pueue {daemon.version}" in proc.stdout
    assert "ok    pueue daemon answers: 0 task(s), groups default" in proc.stdout
    assert "ok    pueue groups gpu_a, gpu_b missing: made at caseflow's first contact" in \
        proc.stdout
    assert set(daemon.groups()) == {"default"}  # check makes nothing
    daemon.stop()
    proc = ws.cli("check")
    assert proc.returncode == 1
    assert "FAIL  pueue daemon not running on testhost" in proc.stdout, proc.stdout
    assert "Start it on the host as the SSH user: `pueued -d`" in proc.stdout  # what to do
    assert "\x1b" not in proc.stdout  # pueue's colours are not passed on
    ws.write_config(backend={**backend, "pueue": str(ws.root / "no-pueue-here")})
    proc = ws.cli("check")
    assert proc.returncode == 1
    assert f"FAIL  pueue client {ws.root / 'no-pueue-here'}: not found" in proc.stdout, \
        proc.stdout
