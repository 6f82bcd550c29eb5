"""The `gridengine` backend against the real one-host Grid Engine, over the real sshd.

Every job here is a real Grid Engine job; what Grid Engine says is read back with its own
commands inside the cluster's namespace (`ge.jobs()`, `ge.records()`), not through the backend.
The contract every backend passes is tests/test_backend_contract.py; here is what is Grid
Engine's own: its options, its refusals, a job in error state, a hold, an epilog that fails, a
person's qdel, ids of other jobs, an outage of the qmaster.
"""

import shutil
from pathlib import Path

import pytest
from ge_helper import HOLD, GridEngine, connect

from caseflow.backends import FAILURE, NOT_FOUND, RUNNING, SUCCESS
from caseflow.backends.gridengine_status import parse_qstat
from caseflow.errors import PermanentError, TransientError
from gridengine_cluster import GridEngineCluster
from harness import DEADLINE, wait_for

pytestmark = pytest.mark.slow


def ended(ge, backend, ref):
    return wait_for(lambda: (s := backend.status([ref])[ref.case_id]).outcome != RUNNING and s,
                    DEADLINE, interval=0.1, what=f"job {ref.task_id} to end")


# -- what reaches the job -------------------------------------------------------------------------
TRICKY = ["it's $(touch CANARY) `touch CANARY`; a,b,c=d\nsecond line %j \\ \"q\" -x",
          "ends with a newline\n", "\\0012 \\n \\\\ \\c %b %s $HOME", "", "\n", "-n", "a\tb"]


def test_the_job_gets_its_command_line_and_environment_byte_for_byte(ge):
    """Grid Engine cuts a job script's argument at a newline; caseflow's escapes bring every
    byte through (a list command and the environment alike), and nothing reaches a shell."""
    dump = ('for a in "$@"; do printf "%s\\0" "$a"; done > args.bin; '
            'printf "%s\\0" "$TRICKY" "$CUDA_VISIBLE_DEVICES" > env.bin; pwd > pwd.txt; '
            'echo "to stdout"; echo "to stderr" >&2')
    spec = ge.spec(1, ["sh", "-c", dump, "dump", *TRICKY],
                   env={"TRICKY": TRICKY[0], "CUDA_VISIBLE_DEVICES": "1"})
    backend = ge.backend()
    ref = ge.ref(spec, backend.submit(spec))
    status = ended(ge, backend, ref)
    assert (status.outcome, status.exit_code) == (SUCCESS, 0), status
    folder = Path(spec.remote_path)
    assert (folder / "args.bin").read_bytes().decode().split("\0")[:-1] == TRICKY
    assert (folder / "env.bin").read_bytes().decode().split("\0")[:-1] == [TRICKY[0], "1"]
    assert (folder / "pwd.txt").read_text().strip() == str(folder)
    assert not list(ge.root.rglob("CANARY"))
    assert (folder / ".caseflow/gridengine-job").read_text() == f"{spec.label} {ref.task_id}\n"
    assert (folder / ".caseflow/gridengine-exit").read_text() == f"{ref.task_id} 0\n"
    log = backend.job_log(ref)
    assert "to stdout" in log and "to stderr" in log
    [record] = ge.records(ref.task_id)
    assert (record["jobname"], record["failed"], record["exit_status"]) == (spec.label, "0", "0")


def test_a_groups_options_reach_qsub(ge):
    """A group's queue, parallel environment (slots) and resource requests."""
    backend = ge.backend(groups={
        "gpu_big": {"parallel_environment": "smp", "slots_per_job": 2,
                    "resources": ("h_rt=600",)},
        "gpu_one": {"queue": "one.q"}})
    report = f'echo "$NSLOTS $QUEUE" > where.txt; touch started; {HOLD}'
    big, one = ge.spec(2, report, group="gpu_big"), ge.spec(3, report, group="gpu_one")
    refs = [ge.ref(s, backend.submit(s)) for s in (big, one)]
    for spec, ref in zip((big, one), refs, strict=True):
        started = Path(spec.remote_path) / "started"
        wait_for(started.exists, DEADLINE, what=f"job {ref.task_id} to start")
        ge.wait_state(ref.task_id, "r")
    answers = backend.status(refs)
    assert answers[2].detail == "r on all.q@" + ge.cluster.host + ", 2 slots", answers[2]
    assert answers[3].detail == f"r on one.q@{ge.cluster.host}", answers[3]
    assert (Path(big.remote_path) / "where.txt").read_text() == "2 all.q\n"
    assert (Path(one.remote_path) / "where.txt").read_text() == "1 one.q\n"
    qstat_j = ge.cluster.run(["qstat", "-j", refs[0].task_id], check=True).stdout
    assert "h_rt=600" in qstat_j and "smp range: 2" in qstat_j.replace("  ", " "), qstat_j
    for spec in (big, one):
        (Path(spec.remote_path) / "release").touch()
    assert [ended(ge, backend, r).outcome for r in refs] == [SUCCESS, SUCCESS]


def test_what_qsub_refuses_fails_the_case_with_grid_engines_message(ge):
    spec = ge.spec(4, "true")
    cases = [({"queue": "no-such.q"}, "no-such.q"),
             ({"resources": ("no_such_resource=1",)}, "no_such_resource"),
             ({"parallel_environment": "no-such-pe", "slots_per_job": 2}, "no-such-pe")]
    for options, word in cases:
        with pytest.raises(PermanentError, match="Grid Engine refused the job") as err:
            ge.backend(**options).submit(spec)
        assert word in str(err.value), err.value
    assert not [j for j, (name, _) in ge.jobs().items() if name == spec.label]
    shutil.rmtree(spec.remote_path)
    with pytest.raises(PermanentError, match="case folder is missing"):
        ge.backend().submit(spec)


# -- a job that waits for a person ----------------------------------------------------------------
def test_a_held_job_and_one_in_error_state_wait_for_a_person_and_run_once_freed(ge):
    """A hold (qhold, or -h) and an error state (Eqw: here its case folder is not there when
    it starts, as on a host that does not see the file system) are `running` with what a
    person must do, in the detail and in the backend's notice; cleared, the job runs, and its
    last accounting record decides (the first one says failed 28)."""
    backend = ge.backend(extra_args=("-h",))
    spec = ge.spec(5, 'echo "ran"')
    ref = ge.ref(spec, backend.submit(spec))
    ge.wait_state(ref.task_id, "hqw")
    status = backend.status([ref])[5]
    assert (status.outcome, status.detail) == \
        (RUNNING, f"hqw: held, it waits for qrls {ref.task_id}")
    assert "1 Grid Engine job(s) HELD" in backend.notice()
    folder = Path(spec.remote_path)
    away = folder.with_name("elsewhere")
    folder.rename(away)
    ge.cluster.run(["qrls", ref.task_id], check=True)
    ge.wait_state(ref.task_id, "Eqw")
    live, _ = parse_qstat(ge.cluster.run(["qstat", "-xml"], check=True).stdout)
    assert live[ref.task_id].state == "Eqw" and live[ref.task_id].name == spec.label
    status = backend.status([ref])[5]
    assert status.outcome == RUNNING, status
    assert "Eqw: in ERROR" in status.detail and f"qmod -cj {ref.task_id}" in status.detail
    assert "can't chdir" in status.detail and str(folder) in status.detail, status.detail
    assert f"ERROR state (Eqw: {ref.task_id})" in backend.notice()
    assert [r["failed"] for r in ge.records(ref.task_id)] == \
        ["28  : changing into working directory"]
    away.rename(folder)
    # 8.1.9's qmod exits 1 although it did clear it
    cleared = ge.cluster.run(["qmod", "-cj", ref.task_id]).stdout
    assert f"cleared error state of job {ref.task_id}" in cleared, cleared
    status = ended(ge, backend, ref)
    assert (status.outcome, status.exit_code) == (SUCCESS, 0), status
    assert [r["failed"].split()[0] for r in ge.records(ref.task_id)] == ["28", "0"]
    assert backend.notice() is None
    assert "ran" in backend.job_log(ref)


def test_a_job_deleted_by_a_person_while_running_fails_with_grid_engines_reason(ge):
    backend = ge.backend()
    spec = ge.spec(6, f'echo "started 6"; touch started; {HOLD}')
    ref = ge.ref(spec, backend.submit(spec))
    wait_for(lambda: (Path(spec.remote_path) / "started").exists(), DEADLINE, what="the start")
    ge.cluster.run(["qdel", ref.task_id], check=True)
    status = ended(ge, backend, ref)
    # -notify: SIGUSR2 ended the command (128 + 12); the wrapper lived and wrote its code
    assert (status.outcome, status.exit_code) == (FAILURE, 140), status
    assert status.detail == (f"grid engine job {ref.task_id} ended, exit code 140 "
                             "(SIGUSR2: a qdel)")
    assert (Path(spec.remote_path) / ".caseflow/gridengine-exit").read_text() == \
        f"{ref.task_id} 140\n"
    assert "started 6" in backend.job_log(ref)
    backend.cancel(ref)  # it has ended: no error


def test_failed_in_the_accounting_record_is_a_failure_though_the_job_exited_0(ge):
    """A queue whose epilog fails: the job's command ended with 0 (its exit code file says
    so), Grid Engine records failed 15 "in epilog", puts the queue in error state and the job
    back in the queue; deleted there, the record decides: failure."""
    conf = ge.cluster.run(["qconf", "-sq", "one.q"], check=True).stdout
    lines = [{"qname": "qname epi.q", "epilog": "epilog /bin/false"}.get(ln.split(" ")[0], ln)
             for ln in conf.splitlines()]
    path = ge.root.parent / "epi.q"
    path.write_text("\n".join(lines) + "\n")
    ge.cluster.run(["qconf", "-Aq", str(path)], check=True)
    try:
        wait_for(lambda: "epi.q@" in ge.cluster.run(["qstat", "-f", "-q", "epi.q"]).stdout,
                 DEADLINE, interval=0.1, what="the queue epi.q")
        backend = ge.backend(queue="epi.q")
        spec = ge.spec(7, "true")
        ref = ge.ref(spec, backend.submit(spec))
        wait_for(lambda: ge.records(ref.task_id), DEADLINE, interval=0.2,
                 what="the accounting record of the epilog's failure")
        exit_file = Path(spec.remote_path) / ".caseflow/gridengine-exit"
        assert exit_file.read_text() == f"{ref.task_id} 0\n"
        ge.wait_state(ref.task_id, "qw")  # back in the queue: running, for caseflow
        assert backend.status([ref])[7].outcome == RUNNING
        backend.cancel(ref)
        ge.wait_state(ref.task_id, None)
        status = backend.status([ref])[7]
        assert status.outcome == FAILURE and "(15: in epilog)" in status.detail, status
    finally:
        ge.close()
        ge.cluster.run(["qconf", "-dq", "epi.q"], check=True)


# -- ids and names --------------------------------------------------------------------------------
def test_an_id_that_names_another_job_is_not_the_cases_and_cancel_leaves_it(ge):
    """Ids start over when the qmaster lost its spool: a stored id may name a stranger."""
    other = ge.qsub("-N", "someone-else", "-b", "y", "sleep", "300")
    ge.wait_state(other, "r")
    backend = ge.backend()
    spec = ge.spec(8, "true")
    ref = ge.ref(spec, other)
    status = backend.status([ref])[8]
    assert status.outcome == NOT_FOUND and "not this case's" in status.detail, status
    backend.cancel(ref)
    assert ge.state(other) == "r"  # a qdel shows at once: "dr", then gone
    ge.cluster.run(["qdel", other], check=True)
    ge.wait_state(other, None)


def test_a_submit_whose_record_was_lost_adopts_the_job_by_its_name(ge):
    backend = ge.backend(extra_args=("-h",))
    spec = ge.spec(9, "true")
    first = backend.submit(spec)
    record = Path(spec.remote_path) / ".caseflow/gridengine-job"
    record.unlink()  # as when the connection dropped between qsub and writing the record
    ref = ge.ref(spec, "")
    assert backend.find(ref) == first
    assert backend.submit(spec) == first
    assert record.read_text() == f"{spec.label} {first}\n"
    assert [j for j, (name, _) in ge.jobs().items() if name == spec.label] == [first]
    backend.cancel(ge.ref(spec, first))  # a pending job: deleted without a record
    ge.wait_state(first, None)
    record.unlink()
    assert backend.find(ref) is None
    status = backend.status([ge.ref(spec, first)])[9]
    assert status.outcome == NOT_FOUND and "deleted before it started" in status.detail


# -- what Grid Engine reads into a job's end ---------------------------------------------------
def test_exit_codes_99_and_100_end_the_job_once_with_that_code(ge):
    """Grid Engine reads a job script's exit 99 as "run it again" and 100 as "error state"; a
    case's command may end with either: it runs once and its case ends with that code."""
    backend = ge.backend()
    specs = [ge.spec(60 + i, f"echo start >> starts.txt; exit {code}")
             for i, code in enumerate((99, 100, 3))]
    refs = [ge.ref(s, backend.submit(s)) for s in specs]
    for spec, ref, code in zip(specs, refs, (99, 100, 3)):
        status = ended(ge, backend, ref)
        assert (status.outcome, status.exit_code) == (FAILURE, code), status
        assert (Path(spec.remote_path) / "starts.txt").read_text() == "start\n"
        assert ge.state(ref.task_id) is None  # not queued again, not in an error state
        assert (Path(spec.remote_path) / ".caseflow/gridengine-exit").read_text() == \
            f"{ref.task_id} {code}\n"


def _labelled(label: str) -> list[int]:
    """The pids of the processes whose environment holds CASEFLOW_JOB=label."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"CASEFLOW_JOB={label}".encode() in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:
            pass
    return pids


def _pids(folder: Path) -> list[int]:
    """The pids the job's children wrote to child-*.pid."""
    return [int(f.read_text()) for f in sorted(folder.glob("child-*.pid")) if f.read_text()]


def _live(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# children that outlive the job's process group: in a session of their own, one that ignores
# TERM, one with an empty environment (no label), one whose name overwrites its environment
LEFTOVERS = ("setsid sh -c 'echo $$ > child-1.pid; exec sleep 300' & "
             "setsid sh -c 'trap \"\" TERM; echo $$ > child-2.pid; sleep 300' & "
             "setsid env -i sh -c 'echo $$ > child-3.pid; exec sleep 300' & "
             "setsid perl -e 'open F, \">child-4.pid\"; print F $$; close F; "
             "$0 = \"trainer \" . \"x\" x 400; sleep 300' & "
             "while [ \"$(ls child-*.pid 2>/dev/null | wc -l)\" -lt 4 ]; do sleep 0.05; done; ")


def test_what_the_job_left_running_is_ended_before_the_job_counts_as_ended(ge):
    """A child in a session of its own (setsid) outlives the job's process group, which is all
    Grid Engine ends; it would hold the slot's GPU after the case ended. The wrapper ends the
    job's processes (Grid Engine's additional group id, which no child sheds, or the label in
    the environment): TERM, KILL 10 s later for one that ignores TERM, before it writes the
    exit code: once the job counts as ended, nothing of it runs (found by reviews, stop 35)."""
    backend = ge.backend()
    spec = ge.spec(63, LEFTOVERS + "echo left > left.txt; " + HOLD)
    ref = ge.ref(spec, backend.submit(spec))
    wait_for(lambda: (Path(spec.remote_path) / "left.txt").exists(), DEADLINE,
             what="the job to leave its children")
    children = _pids(Path(spec.remote_path))
    assert len(children) == 4 and all(map(_live, children)), children
    (Path(spec.remote_path) / "release").touch()
    status = ended(ge, backend, ref)
    assert (status.outcome, status.exit_code) == (SUCCESS, 0), status
    assert not [p for p in children if _live(p)] and _labelled(spec.label) == []


def test_a_cancelled_job_ends_what_it_left_before_it_counts_as_ended(ge):
    """caseflow's cancel is a qdel; its jobs are submitted with -notify, so Grid Engine sends
    SIGUSR2 first and the wrapper, which lives through it, ends the job's processes (a bare
    qdel killed the wrapper too, and the children lived on)."""
    backend = ge.backend()
    spec = ge.spec(65, LEFTOVERS + "echo left > left.txt; sleep 300")
    ref = ge.ref(spec, backend.submit(spec))
    wait_for(lambda: (Path(spec.remote_path) / "left.txt").exists(), DEADLINE,
             what="the job to leave its children")
    children = _pids(Path(spec.remote_path))
    assert len(children) == 4 and all(map(_live, children)), children
    backend.cancel(ref)
    status = ended(ge, backend, ref)
    assert status.outcome in (FAILURE, NOT_FOUND), status
    assert not [p for p in children if _live(p)]


def test_a_soft_limit_warns_the_command_and_the_wrapper_lives_on(ge):
    """`s_rt` (a soft run-time limit) sends SIGUSR1 as a warning: a command that handles it
    finishes, and its case ends with its own exit code (the wrapper died of it, found by a
    review)."""
    backend = ge.backend(resources=("s_rt=0:0:2",))
    spec = ge.spec(66, "trap 'touch warned' USR1; i=0; "
                       "while [ ! -e warned ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; "
                       "sleep 1; echo done > finished.txt")
    ref = ge.ref(spec, backend.submit(spec))
    status = ended(ge, backend, ref)
    folder = Path(spec.remote_path)
    assert (folder / "warned").exists() and (folder / "finished.txt").exists()
    assert (status.outcome, status.exit_code) == (SUCCESS, 0), status


def test_a_job_killed_before_its_accounting_record_is_judged_when_the_record_comes(tmp_path):
    """A cluster of its own that writes accounting 20 s after a job's end (Debian's default is
    15 s). A job killed as a whole (SIGKILL to its group: the OOM killer, a limit, an admin)
    leaves no exit code file and, for 20 s, no record: the job counts as running meanwhile,
    and its case then fails with Grid Engine's verdict, not "not found" (found by a review,
    stop 35)."""
    with GridEngineCluster(tmp_path / "cell", queues={"all.q": 2},
                           accounting_flush_time="00:00:20") as cluster:
        transport = connect(cluster, tmp_path / "remote")
        ge = GridEngine(cluster, transport, tmp_path / "remote")
        try:
            backend = ge.backend(accounting_wait=120)
            spec = ge.spec(64, "touch started; sleep 1; kill -9 0")
            ref = ge.ref(spec, backend.submit(spec))
            wait_for(lambda: (Path(spec.remote_path) / "started").exists(), DEADLINE,
                     what="the job to start")
            ge.wait_state(ref.task_id, None)  # gone from qstat
            seen = []
            status = wait_for(
                lambda: (s := backend.status([ref])[64]).outcome != RUNNING and s
                or seen.append(s.detail), 120, interval=0.5, what="the job's verdict")
            assert any("waiting for Grid Engine's accounting record" in d for d in seen), seen
            assert status.outcome == FAILURE and "137" in status.detail, status
            assert not (Path(spec.remote_path) / ".caseflow/gridengine-exit").exists()
        finally:
            transport.close()


# -- the qmaster down -----------------------------------------------------------------------------
def test_while_the_qmaster_is_down_nothing_is_judged_and_after_it_the_job_is_known(tmp_path):
    """A cluster of its own: its qmaster is killed, as in a crash. Submitting, polling and
    cancelling are transient errors (no case fails); started again, the qmaster knows the job
    from its spool, running ("t" until the execd reports, seen once in a loaded run). (Its execd finds the new qmaster only after about 30 s, measured:
    until then nothing of the job's end would be seen, so the test stops here; the cluster is
    stopped with everything in it.)"""
    with GridEngineCluster(tmp_path / "cell", queues={"all.q": 2}) as cluster:
        transport = connect(cluster, tmp_path / "remote")
        ge = GridEngine(cluster, transport, tmp_path / "remote")
        try:
            backend = ge.backend()
            spec = ge.spec(10, f"touch started; {HOLD}")
            ref = ge.ref(spec, backend.submit(spec))
            wait_for(lambda: (Path(spec.remote_path) / "started").exists(), DEADLINE,
                     what="the job to start")
            cluster.kill_qmaster()
            with pytest.raises(TransientError, match="qstat failed"):
                backend.status([ref])
            with pytest.raises(TransientError, match="not known whether the case has one"):
                backend.submit(ge.spec(11, "true"))
            with pytest.raises(TransientError, match="unable to send message to qmaster"):
                backend.cancel(ref)
            cluster.start_qmaster()
            # "t" (being transferred) until the execd reports to the new qmaster, then "r"
            status = backend.status([ref])[10]
            assert status.outcome == RUNNING, status
            assert status.detail.split()[:3] in (["r", "on", f"all.q@{cluster.host}"],
                                                 ["t", "on", f"all.q@{cluster.host}"]), status
            assert ge.state(ref.task_id) in ("r", "t")
        finally:
            transport.close()
