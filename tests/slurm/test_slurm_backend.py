"""The `slurm` backend against the real one-node Slurm cluster (2 fake GPUs), over the real sshd.

Every job here is a real Slurm batch job; what Slurm says is read back with Slurm's own
commands inside the cluster's namespace (`slurm_cluster.run`), not through the backend.
"""

import json
import shutil
from dataclasses import replace
import threading
from pathlib import Path

import pytest
import yaml

from caseflow.backends import (FAILURE, NOT_FOUND, RUNNING, SUCCESS, UNREADABLE, JobRef,
                               JobSpec, JobStatus)
from caseflow.backends.slurm import SlurmBackend
from caseflow.backends.output import BadOutput
from caseflow.backends.slurm_status import (Poll, _exit_of, parse_sacct, parse_squeue,
                                            squeue_outcome)
from caseflow.backends.slurm_options import SlurmOptions
from caseflow.config import BackendConfig, load_config
from caseflow.errors import ConfigError, PermanentError, TransientError
from harness import wait_for

pytestmark = pytest.mark.slow
DEADLINE = 60
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"}
# what a case name may carry: quotes, $(...), backticks, ;, commas, =, a newline, %, \
HOSTILE = "it's $(touch CANARY) `touch CANARY`; a,b,c=d\nsecond line %j \\ \"q\" -x"
HOLD = "while [ ! -e release ]; do sleep 0.05; done"


class Cluster:
    """The backend under test, and Slurm's own view of the jobs (inside the namespace)."""

    def __init__(self, cluster, transport, root: Path):
        self.cluster = cluster
        self.transport = transport
        self.root = root

    def backend(self, **options) -> SlurmBackend:
        groups = options.pop("groups", {})
        base = SlurmOptions(**options)
        return SlurmBackend(self.transport, BackendConfig(
            kind="slurm", command="true", slurm=base,
            slurm_groups=tuple((g, SlurmOptions(**{**base.__dict__, **o}))
                               for g, o in groups.items())))

    def folder(self, name: str) -> Path:
        folder = self.root / name
        (folder / ".caseflow").mkdir(parents=True, exist_ok=True)  # as the upload leaves it
        return folder

    def spec(self, case_id: int, command: str, *, name: str | None = None, group="gpu_a",
             env=None, run: int = 1) -> JobSpec:
        folder = self.folder(name or f"case{case_id}")
        return JobSpec(case_id=case_id, label=f"caseflow-test-{case_id}-{run}",
                       remote_path=str(folder), group=group, command=command,
                       env={"CASEFLOW_CASE_ID": str(case_id), **(env or {})})

    def queue(self) -> dict[str, dict]:
        res = self.cluster.run(["squeue", "--json"], check=True)
        return {str(j["job_id"]): j for j in json.loads(res.stdout)["jobs"]}

    def accounted(self, job_id: str) -> list[str]:
        res = self.cluster.run(["sacct", "-c", "-X", "-P", "-n", "-j", job_id, "-o",
                                "JobID,JobName,State,ExitCode"], check=True)
        return [line for line in res.stdout.splitlines() if line.split("|")[0] == job_id]

    def cancel_everything(self) -> None:
        self.cluster.run(["scancel", "--user=root"])
        wait_for(lambda: not [j for j in self.queue().values() if j["job_state"] in ACTIVE],
                 DEADLINE, interval=0.1, what="every job of the test to end")


@pytest.fixture
def slurm(slurm_cluster, slurm_transport, tmp_path):
    c = Cluster(slurm_cluster, slurm_transport, tmp_path / "remote")
    assert not [j for j in c.queue().values() if j["job_state"] in ACTIVE], \
        "jobs of an earlier test are still queued"
    yield c
    c.cancel_everything()


def ref(spec: JobSpec, task_id: str) -> JobRef:
    return JobRef(spec.case_id, task_id, spec.label, spec.remote_path)


def until(backend, refs, check, what: str):
    """Poll like the engine does (all jobs in one call) until `check(answers)` holds."""
    def poll():
        answers = backend.status(refs)
        return answers if check(answers) else None
    return wait_for(poll, DEADLINE, interval=0.1, what=what)


def ended(backend, r: JobRef):
    return until(backend, [r], lambda a: a[r.case_id].outcome != RUNNING,
                 f"slurm job {r.task_id} to end")[r.case_id]


def canaries(*roots: Path) -> list[Path]:
    return [p for root in roots for p in Path(root).rglob("CANARY*")]


# -- submit, run, succeed -------------------------------------------------------------------
def test_a_job_runs_in_its_folder_with_its_env_and_the_gpus_slurm_gives_it(slurm_cluster, slurm):
    backend = slurm.backend(groups={"gpu_big": {"gpus_per_job": 2, "time": "5"}})
    dump = ('printf %s "$CASEFLOW_CASE_NAME" > name.txt; printf %s "$CUDA_VISIBLE_DEVICES" '
            '> gpu.txt; pwd > pwd.txt; echo "hello from the job"; echo "to stderr" >&2')
    env = {"CASEFLOW_CASE_NAME": HOSTILE}
    # a slot's device is not passed: CUDA_VISIBLE_DEVICES is Slurm's
    one = replace(slurm.spec(1, dump, name="case 'one' 100% $(x)", env=env), device="7")
    job = backend.submit(one)
    assert job.isdigit()
    status = ended(backend, ref(one, job))
    assert status == JobStatus(SUCCESS, f"slurm job {job} COMPLETED, exit code 0", 0)
    folder = Path(one.remote_path)
    assert (folder / "name.txt").read_text() == HOSTILE
    assert (folder / "gpu.txt").read_text() in {"0", "1"}  # one GPU, chosen by Slurm
    assert (folder / "pwd.txt").read_text().strip() == str(folder)
    assert not canaries(slurm.root, Path(slurm_cluster.sshd.home))
    log = backend.job_log(ref(one, job))
    assert "hello from the job" in log and "to stderr" in log
    assert (folder / ".caseflow" / "slurm.out").read_text() == log
    assert (folder / ".caseflow" / "slurm-exit_code").read_text() == f"{job} 0\n"
    queued = slurm.queue().get(job)
    if queued is not None:  # until Slurm forgets it (MinJobAge)
        assert queued["name"] == one.label and queued["job_state"] == "COMPLETED"
    wait_for(lambda: slurm.accounted(job), DEADLINE, what="the completion record")
    assert slurm.accounted(job) == [f"{job}|{one.label}|COMPLETED|0:0"]

    # a group with its own options: two GPUs and a time limit of 5 minutes
    big = slurm.spec(2, dump + f"; {HOLD}", group="gpu_big", env=env)
    job = backend.submit(big)
    wait_for(lambda: slurm.queue()[job]["job_state"] == "RUNNING", DEADLINE,
             what="the two-GPU job to run")
    seen = slurm.queue()[job]
    assert seen["time_limit"] == 5 and seen["tres_per_node"] == "gres:gpu:2"
    wait_for(lambda: (Path(big.remote_path) / "pwd.txt").exists(), DEADLINE,
             what="the job to write its files")
    assert (Path(big.remote_path) / "gpu.txt").read_text() == "0,1"
    (Path(big.remote_path) / "release").touch()
    assert ended(backend, ref(big, job)).outcome == SUCCESS


def test_a_failing_job_reports_its_exit_code_and_its_log(slurm):
    backend = slurm.backend(gpus_per_job=0)
    spec = slurm.spec(3, 'echo "about to fail"; exit 7')
    job = backend.submit(spec)
    status = ended(backend, ref(spec, job))
    assert status == JobStatus(FAILURE, f"slurm job {job} FAILED, exit code 7", 7)
    assert "about to fail" in backend.job_log(ref(spec, job))


# -- waiting for GPUs, one command per poll --------------------------------------------------
def test_a_third_gpu_job_waits_for_resources_and_one_poll_is_one_command(slurm):
    backend = slurm.backend()
    specs = [slurm.spec(10 + i, HOLD) for i in range(3)]
    refs = []
    for spec in specs:  # one after the other: the third is the one that waits
        refs.append(ref(spec, backend.submit(spec)))

    def two_run_one_waits(answers):
        details = [answers[r.case_id].detail for r in refs]
        return [d.split()[0] for d in details] == ["RUNNING", "RUNNING", "PENDING"] and \
            details[2] == "PENDING (Resources)"
    answers = until(backend, refs, two_run_one_waits, "two jobs running and one waiting")
    assert all(a.outcome == RUNNING for a in answers.values())
    node = slurm.cluster.node
    assert [answers[r.case_id].detail for r in refs[:2]] == [f"RUNNING on {node}, gres:gpu:1"] * 2
    queue = slurm.queue()  # Slurm's own view: each its own GPU
    assert sorted(g for r in refs[:2] for g in queue[r.task_id]["gres_detail"]) == \
        ["gpu:1(IDX:0)", "gpu:1(IDX:1)"]

    # one remote command for all of them, also when some are unknown to squeue
    gone = JobRef(99, "999999", "caseflow-test-99-1", str(slurm.folder("case99")))
    before = slurm.transport.commands
    answers = backend.status([*refs, gone])
    assert slurm.transport.commands - before == 1
    assert answers[99].outcome == NOT_FOUND
    assert [answers[r.case_id].outcome for r in refs] == [RUNNING] * 3

    for spec in specs:
        (Path(spec.remote_path) / "release").touch()
    until(backend, refs, lambda a: all(s.outcome == SUCCESS for s in a.values()),
          "all three to succeed")


# -- cancel -----------------------------------------------------------------------------------
def test_cancel_ends_a_running_and_a_pending_job_as_cancelled(slurm):
    backend = slurm.backend(gpus_per_job=0)
    running = slurm.spec(20, HOLD)
    r = ref(running, backend.submit(running))
    until(backend, [r], lambda a: a[r.case_id].detail.startswith("RUNNING"), "the job to run")
    # not the case's job (another name): left alone
    backend.cancel(JobRef(r.case_id, r.task_id, "caseflow-test-other-1", r.remote_path))
    assert backend.status([r])[r.case_id].outcome == RUNNING
    backend.cancel(r)
    status = ended(backend, r)
    assert status.outcome == FAILURE and status.exit_code is None
    assert status.detail.startswith(f"slurm job {r.task_id} CANCELLED"), status.detail
    backend.cancel(r)  # again: it has ended, no error

    later = slurm.backend(gpus_per_job=0, extra_args=("--begin=now+3600",))
    pending = slurm.spec(21, "true")
    p = ref(pending, later.submit(pending))
    assert until(later, [p], lambda a: a[p.case_id].detail == "PENDING (BeginTime)",
                 "the job to wait for its begin time")
    later.cancel(p)
    assert ended(later, p).detail == f"slurm job {p.task_id} CANCELLED"
    wait_for(lambda: slurm.accounted(p.task_id), DEADLINE, what="the completion record")
    assert slurm.accounted(p.task_id)[0].split("|")[2] == "CANCELLED"


# -- at scale ----------------------------------------------------------------------------------
FOREIGN = 300


def test_a_poll_transfers_what_caseflows_jobs_need_not_the_whole_queue(slurm_cluster, slurm):
    """300 foreign jobs join the queue: a poll of the case's 3 jobs transfers as many bytes as
    before (counted on the wire, at the cluster's relay), while `squeue --json`, which lists
    every job of the cluster (22.05 ignores its filters), grows by kilobytes per foreign job.
    bench/slurm_poll_bench.py measures it with 5,000."""
    backend = slurm.backend(gpus_per_job=0)
    specs = [slurm.spec(80 + i, HOLD) for i in range(3)]
    refs = [ref(s, backend.submit(s)) for s in specs]
    until(backend, refs, lambda a: all(a[r.case_id].detail.startswith("RUNNING") for r in refs),
          "three jobs running")
    relay = slurm_cluster.bridge

    def wire_bytes(call):
        call()  # the same answer twice in a row: the second is measured
        before = relay.to_client + relay.to_server
        value = call()
        return relay.to_client + relay.to_server - before, value

    poll = lambda: backend.status(refs)  # noqa: E731
    everything = lambda: slurm.transport.run(["squeue", "--json"])  # noqa: E731
    (alone, answers), (json_alone, _) = wire_bytes(poll), wire_bytes(everything)
    slurm_cluster.run(["sh", "-c", f'for i in $(seq {FOREIGN}); do sbatch --hold -J foreign-$i '
                       '-o /dev/null --chdir=/tmp --wrap true >/dev/null || exit 1; done'],
                      check=True, timeout=600)
    (crowded, crowded_answers), (json_crowded, _) = wire_bytes(poll), wire_bytes(everything)
    assert crowded_answers == answers
    assert crowded <= alone * 1.1 + 300, (alone, crowded)  # SSH padding varies a little
    assert json_crowded - json_alone > FOREIGN * 1000, (json_alone, json_crowded)
    for spec in specs:
        (Path(spec.remote_path) / "release").touch()


# -- after Slurm forgot the job ----------------------------------------------------------------
def _drop_completion_record(cluster, job_id: str, label: str) -> None:
    """Remove one job's line from the completion log (sacct -c), in place: slurmctld keeps
    the file open and appends to it."""
    with open(cluster.jobcomp, "r+") as f:
        lines = f.readlines()
        keep = [ln for ln in lines if not (ln.startswith(f"JobId={job_id} ") and
                                           f" Name={label} " in ln)]
        assert len(keep) == len(lines) - 1
        f.seek(0)
        f.writelines(keep)
        f.truncate()


def test_a_job_slurm_has_forgotten_is_read_from_sacct_then_its_exit_file(slurm_cluster, slurm):
    backend = slurm.backend(gpus_per_job=0)
    failing, passing = slurm.spec(30, "exit 3"), slurm.spec(31, "true")
    f, p = (ref(s, backend.submit(s)) for s in (failing, passing))
    until(backend, [f, p], lambda a: all(s.outcome != RUNNING for s in a.values()),
          "both jobs to end")
    wait_for(lambda: not {f.task_id, p.task_id} & set(slurm.queue()), DEADLINE, interval=0.2,
             what="Slurm to forget both jobs (MinJobAge, a purge every 10 s)")

    exit_file = Path(failing.remote_path) / ".caseflow" / "slurm-exit_code"
    recorded = exit_file.read_text()
    assert recorded == f"{f.task_id} 3\n"
    exit_file.unlink()  # so the answer can only come from sacct
    (Path(passing.remote_path) / ".caseflow" / "slurm-exit_code").unlink()
    answers = backend.status([f, p])
    assert answers[30] == JobStatus(FAILURE, f"slurm job {f.task_id} FAILED, exit code 3", 3)
    assert answers[31] == JobStatus(SUCCESS, f"slurm job {p.task_id} COMPLETED, exit code 0",
                                    0)

    _drop_completion_record(slurm_cluster, f.task_id, f.label)
    assert slurm.accounted(f.task_id) == []
    exit_file.write_text(recorded)  # now only the exit code file knows
    status = backend.status([f])[30]
    assert status.outcome == FAILURE and status.exit_code == 3
    assert "exit code 3" in status.detail and "exit code file" in status.detail

    exit_file.write_text("12345 0\n")  # another job's: does not count
    assert backend.status([f])[30].outcome == NOT_FOUND
    exit_file.unlink()
    status = backend.status([f])[30]
    assert status.outcome == NOT_FOUND and "no longer knows" in status.detail


# -- a case never gets two jobs ----------------------------------------------------------------
def test_submitting_again_adopts_the_cases_job(slurm):
    backend = slurm.backend(gpus_per_job=0)
    spec = slurm.spec(40, HOLD)
    job = backend.submit(spec)
    assert backend.submit(spec) == job  # from the record in .caseflow/
    until(backend, [ref(spec, job)], lambda a: a[40].detail.startswith("RUNNING"), "running")
    record = Path(spec.remote_path) / ".caseflow" / "slurm-job"
    assert record.read_text() == f"{spec.label} {job}\n"
    record.unlink()  # as if the submit had died between sbatch and writing the record
    assert backend.submit(spec) == job  # found by its name with squeue
    assert record.read_text() == f"{spec.label} {job}\n"
    named = [j for j in slurm.queue().values() if j["name"] == spec.label]
    assert [str(j["job_id"]) for j in named] == [job]

    rerun = slurm.spec(40, "true", run=2)  # the next run of the case: a job of its own
    second = backend.submit(rerun)
    assert second != job
    assert ended(backend, ref(rerun, second)).outcome == SUCCESS


@pytest.fixture
def slow_sbatch(slurm_cluster, tmp_path):
    """`sbatch` on the host notes each call in `calls`, then waits for the file `go` before it
    submits (a controller slow to answer)."""
    control = tmp_path / "slow-sbatch"
    control.mkdir()
    wrapper = Path(slurm_cluster.sshd.bin) / "sbatch"
    wrapper.write_text(f"#!/bin/sh\necho call >> {control}/calls\n"
                       f"while [ ! -e {control}/go ]; do sleep 0.05; done\n"
                       f"exec {shutil.which('sbatch')} \"$@\"\n")
    wrapper.chmod(0o755)
    yield control
    (control / "go").touch()
    wrapper.unlink()


def test_a_submit_whose_reply_is_late_is_not_sent_again_and_the_retry_adopts(
        slurm_cluster, slurm, slow_sbatch):
    """sbatch answers after the command timeout: the transport does not send the submit again
    (a second sbatch, before the first job exists, would add a second job); the step's later
    retry adopts the one job."""
    from caseflow.config import TransportConfig
    from caseflow.transports.ssh import SSHTransport
    transport = SSHTransport(TransportConfig(**slurm_cluster.transport_settings(
        slurm.root, command_timeout=5)))
    backend = SlurmBackend(transport, None)
    spec = slurm.spec(45, HOLD)
    calls, gave_up = slow_sbatch / "calls", threading.Event()

    def release():  # once the submit has given up, or a second sbatch has come
        wait_for(lambda: gave_up.is_set() or (calls.exists() and
                                               len(calls.read_text().splitlines()) >= 2),
                 DEADLINE, what="the submit to give up or to call sbatch again")
        (slow_sbatch / "go").touch()
    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        try:
            with pytest.raises(TransientError, match="did not finish within 5 s"):
                backend.submit(spec)
        finally:
            gave_up.set()
            releaser.join()
        assert calls.read_text() == "call\n"
        named = wait_for(lambda: [j for j in slurm.queue().values() if j["name"] == spec.label],
                         DEADLINE, what="the first sbatch's job")
        job = str(named[0]["job_id"])
        assert backend.submit(spec) == job  # the step, later: adopted, not submitted again
        assert [str(j["job_id"]) for j in slurm.queue().values() if j["name"] == spec.label] \
            == [job]
        assert calls.read_text() == "call\n"
    finally:
        transport.close()


# -- Slurm refusing, and answers that cannot be read --------------------------------------------
def test_what_slurm_refuses_fails_the_case_with_slurms_message(slurm):
    with pytest.raises(PermanentError, match="Requested node configuration is not available"):
        slurm.backend(gpus_per_job=3).submit(slurm.spec(50, "true"))
    with pytest.raises(PermanentError, match="(?i)invalid partition"):
        slurm.backend(partition="nope").submit(slurm.spec(51, "true"))
    missing = JobSpec(52, "caseflow-test-52-1", str(slurm.root / "not there"), "gpu_a", "true")
    with pytest.raises(PermanentError, match="case folder is missing"):
        slurm.backend().submit(missing)


@pytest.fixture
def fake_squeue(slurm_cluster, tmp_path):
    """`squeue` on the host answers with the file `answer` (and its exit code `rc`) when it
    exists; else the real squeue runs, its output edited by the sed script `sed` if there is
    one."""
    control = tmp_path / "fake-squeue"
    control.mkdir()
    wrapper = Path(slurm_cluster.sshd.bin) / "squeue"
    real = shutil.which("squeue")
    wrapper.write_text(f"#!/bin/sh\nif [ -f {control}/answer ]; then cat {control}/answer; "
                       f"exit \"$(cat {control}/rc 2>/dev/null || echo 0)\"; fi\n"
                       f"if [ -f {control}/sed ]; then out=$({real} \"$@\"); rc=$?\n"
                       f"  printf '%s\\n' \"$out\" | sed -f {control}/sed; exit $rc; fi\n"
                       f"exec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    yield control
    wrapper.unlink()


def test_one_odd_entry_in_a_poll_is_that_jobs_problem_alone(slurm, fake_squeue):
    """squeue prints one job's line without its id and another's with a state caseflow does
    not know: those two are UNREADABLE (the engine charges only them an attempt); the others,
    running or ended, get their real outcomes in the same poll."""
    backend = slurm.backend(gpus_per_job=0)
    failed = slurm.spec(74, "exit 3")
    done = ref(failed, backend.submit(failed))
    ended(backend, done)
    specs = [slurm.spec(70 + i, HOLD) for i in range(4)]  # one CPU each, the node has 4
    refs = [ref(s, backend.submit(s)) for s in specs]
    until(backend, refs, lambda a: all(a[r.case_id].detail.startswith("RUNNING") for r in refs),
          "four jobs running")
    refs.append(done)
    no_id, odd_state = refs[2], refs[3]
    (fake_squeue / "sed").write_text(f"s/^{no_id.task_id}|/|/\n"
                                     f"s/^{odd_state.task_id}|RUNNING|/{odd_state.task_id}|"
                                     f"EXPLODED|/\n")
    answers = backend.status(refs)
    assert [answers[r.case_id].outcome for r in refs] == \
        [RUNNING, RUNNING, UNREADABLE, UNREADABLE, FAILURE]
    assert "cannot read" in answers[no_id.case_id].detail and \
        f"|RUNNING|None|" in answers[no_id.case_id].detail
    assert answers[odd_state.case_id].detail == \
        f"unknown Slurm job state 'EXPLODED' of job {odd_state.task_id}"
    assert (answers[74].outcome, answers[74].exit_code) == (FAILURE, 3)
    (fake_squeue / "sed").unlink()
    assert [backend.status(refs)[r.case_id].outcome for r in refs] == [RUNNING] * 4 + [FAILURE]
    for spec in specs:
        (Path(spec.remote_path) / "release").touch()


def test_unreadable_squeue_output_is_each_jobs_problem_and_a_failing_squeue_is_transient(
        slurm, fake_squeue):
    backend = slurm.backend()
    r = JobRef(60, "5", "caseflow-test-60-1", str(slurm.folder("case60")))
    (fake_squeue / "answer").write_text("<html>502 Bad Gateway\n")
    status = backend.status([r])[60]
    assert status.outcome == UNREADABLE and "'<html>502 Bad Gateway'" in status.detail
    (fake_squeue / "answer").write_text("slurm_load_jobs error: Unable to contact slurm "
                                        "controller (connect failure)\n")
    (fake_squeue / "rc").write_text("1")
    with pytest.raises(TransientError, match="squeue failed") as err:
        backend.status([r])
    assert not isinstance(err.value, BadOutput)


# -- reading Slurm's answers (no cluster needed) ---------------------------------------------------
def test_states_exit_codes_and_odd_lines_are_read():
    assert _exit_of("1792") == (7, 0) and _exit_of("15") == (0, 15)
    assert _exit_of("4:0") == (4, 0) and _exit_of("") == (None, None)
    assert squeue_outcome("8", {"state": "FAILED", "exit_code": "1024"}) == \
        JobStatus(FAILURE, "slurm job 8 FAILED, exit code 4", 4)
    assert squeue_outcome("8", {"state": "TIMEOUT", "exit_code": "15"}) == \
        JobStatus(FAILURE, "slurm job 8 TIMEOUT, signal 15", None)
    assert squeue_outcome("8", {"state": "PENDING", "reason": "Priority"}).detail == \
        "PENDING (Priority)"
    assert squeue_outcome("8", {"state": "RUNNING", "reason": "None", "nodes": "n1",
                                "gres": "N/A"}).detail == "RUNNING on n1"
    with pytest.raises(BadOutput, match="unknown Slurm job state 'EXPLODED'"):
        squeue_outcome("8", {"state": "EXPLODED", "exit_code": "0"})
    jobs, odd = parse_squeue(["5|RUNNING|None|0|n1|gres:gpu:1|1796683690|1796687290|0|"
                              "caseflow-x|with|bars",
                              "|RUNNING|None|0|n1|N/A|N/A|N/A|0|no id", "6|PENDING", "garbage"])
    assert jobs["5"]["name"] == "caseflow-x|with|bars" and jobs["5"]["gres"] == "gres:gpu:1"
    assert list(jobs) == ["5"] and len(odd) == 3
    assert parse_sacct("4|caseflow-x-1-1|CANCELLED by 0|0:0|1796683690|1796683694|n1\n"
                       "JobID|JobName|State|ExitCode|Start|End|NodeList\n"
                       "7|caseflow-x-2-1|CANCELLED by 0|0:0|Unknown|1796683694|None assigned\n"
                       "8|caseflow-x-3-1|COMPLETED|0:0|1796683690|1796683694\n"  # no NodeList
                       "sacct: error: something\n") == \
        {"4": [("caseflow-x-1-1", "CANCELLED", 0, 0, 1796683690, 1796683694, "n1")],
         "7": [("caseflow-x-2-1", "CANCELLED", 0, 0, None, 1796683694, "None assigned")]}
    with pytest.raises(BadOutput, match="incomplete"):
        Poll("@@caseflow squeue 0\n5|RUNNING|None|0|n1|N/A|N/A|N/A|0|x\n")  # cut off


def test_which_answer_counts_when_squeue_no_longer_lists_the_job():
    outcome = SlurmBackend(None)._outcome
    r = JobRef(1, "5", "caseflow-x-1-1", "/cases/1-x")
    running = [("caseflow-x-1-1", "RUNNING", 0, 0, 1796683690, None, "n1")]
    assert outcome(r, None, None, running, True).outcome == RUNNING
    assert outcome(r, None, "5 2", running, True) == JobStatus(
        FAILURE, "slurm job 5 ended, exit code 2 (its exit code file; Slurm no longer lists it)",
        2)
    other = [("caseflow-x-9-1", "COMPLETED", 0, 0, 1, 2, "n1")]  # the same id, another job's
    assert outcome(r, None, None, other, True).outcome == NOT_FOUND
    assert outcome(r, {"name": "someone-else", "state": "RUNNING"}, "5 0", [],
                   False).outcome == NOT_FOUND
    with pytest.raises(BadOutput, match="cannot read"):
        outcome(r, None, None, [], False)  # the poll script saw it in squeue's output


# -- configuration ---------------------------------------------------------------------------------
def test_the_shipped_slurm_example_is_valid(tmp_path):
    """config/slurm.yaml, with its host-specific paths pointed at a temp folder, loads."""
    root = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((root / "config" / "slurm.yaml").read_text())
    (tmp_path / "inbox").mkdir()
    data["inbox"] = str(tmp_path / "inbox")
    data["database"] = str(tmp_path / "caseflow.db")
    data["log"]["file"] = str(tmp_path / "caseflow.log")
    data["results"]["folder"] = str(tmp_path / "results")
    data["archive"] = {k: str(tmp_path / k) for k in data["archive"]}
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    assert config.backend.kind == "slurm" and config.transport.kind == "ssh"
    assert [g.name for g in config.groups] == ["gpu_a", "gpu_big"]
    assert config.backend.slurm_options("gpu_a").sbatch_args() == [
        "--gres=gpu:1", "--partition=gpu", "--time=4:00:00", "--mem=32G", "--cpus-per-task=8"]
    assert config.backend.slurm_options("gpu_big").sbatch_args() == [
        "--gres=gpu:4", "--partition=gpu-large", "--time=1-00:00:00", "--mem=128G",
        "--cpus-per-task=32"]


@pytest.mark.parametrize("backend, message", [
    ({"groups": {"gpu_z": {"gpus_per_job": 2}}},
     r"backend\.groups\.gpu_z: not a configured group \(configured: gpu_a\)"),
    ({"time": 240}, r"backend\.time: expected a quoted Slurm time limit"),
    ({"time": "four hours"}, r"backend\.time: not a Slurm time limit"),
    ({"gpus_per_job": -1}, r"backend\.gpus_per_job: must not be negative"),
    ({"extra_args": ["--job-name=mine"]}, r"backend\.extra_args: '--job-name=mine': caseflow "
                                          r"sets the job's name"),
    ({"extra_args": ["--qos", "normal"]}, r"backend\.extra_args: not an sbatch option: "
                                          r"str 'normal'"),
    ({"groups": {"gpu_a": {"partiton": "x"}}},
     r"backend\.groups\.gpu_a\.partiton: unknown key \(did you mean 'partition'\?\)"),
    ({"pueue": "pueue"}, r"backend\.pueue: unknown key"),
])
def test_slurm_settings_are_checked_naming_file_and_key(tmp_path, backend, message):
    (tmp_path / "inbox").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "inbox": "inbox", "groups": {"gpu_a": 1},
        "transport": {"kind": "local", "root": "remote"},
        "backend": {"kind": "slurm", "command": "true", **backend}}))
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        load_config(path)
