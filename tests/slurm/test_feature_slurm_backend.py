"""Steps of features/slurm_backend.feature: the caseflow daemon, over SSH, on a real Slurm cluster.

The daemon runs in this process (harness.Workspace); its transport is the SSH server beside the
session's Slurm cluster (tests/slurm/conftest.py), and Slurm's view of the jobs is read with
Slurm's own commands inside the cluster's namespace.
"""

import json

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403  (shared steps become fixtures here)
from bdd_steps import case_ends_in, cli_json, drop, results_folder, shown  # noqa: E402
from harness import DEADLINE, JOB, wait_for  # noqa: E402
from test_slurm_lost import wait_node_up  # noqa: E402

pytestmark = pytest.mark.slow

scenarios("slurm_backend.feature")

ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"}


def _names(text: str) -> list[str]:
    return [n.strip().strip('"') for n in text.replace(" and ", ", ").split(",")]


class SlurmView:
    """What Slurm itself says about the jobs (commands run inside the cluster's namespace)."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.waiting: str | None = None  # the case whose job Slurm made wait

    def queue(self) -> dict[str, dict]:
        res = self.cluster.run(["squeue", "--json"], check=True)
        return {str(j["job_id"]): j for j in json.loads(res.stdout)["jobs"]}

    def jobs_named(self, label: str) -> dict[str, str]:
        """{job id: state} of every job of that name: the ones the controller remembers and
        the ended ones in the completion log (sacct -c)."""
        res = self.cluster.run(["sacct", "-c", "-X", "-P", "-n", f"--name={label}", "-o",
                                "JobID,JobName,State"], check=True)
        jobs = {jid: state for jid, name, state in
                (line.split("|") for line in res.stdout.splitlines()) if name == label}
        jobs.update({jid: j["job_state"] for jid, j in self.queue().items()
                     if j["name"] == label})
        return jobs

    def state(self, job_id: str) -> str | None:
        job = self.queue().get(job_id)
        if job is not None:
            return job["job_state"]
        res = self.cluster.run(["sacct", "-c", "-X", "-P", "-n", "-j", job_id, "-o",
                                "JobID,State"], check=True)
        states = [line.split("|")[1] for line in res.stdout.splitlines()
                  if line.split("|")[0] == job_id]
        return states[-1] if states else None

    def cancel_everything(self) -> None:
        self.cluster.run(["scancel", "--user=root"])
        wait_for(lambda: not [j for j in self.queue().values() if j["job_state"] in ACTIVE],
                 DEADLINE, interval=0.1, what="every Slurm job of the scenario to end")


@pytest.fixture
def slurm_view(slurm_cluster):
    view = SlurmView(slurm_cluster)
    assert not [j for j in view.queue().values() if j["job_state"] in ACTIVE], \
        "jobs of an earlier test are still queued"
    yield view
    view.cancel_everything()


def label_of(ws, name: str) -> str:
    row = ws.case(name)
    return f"caseflow-{ws.store.instance_id()}-{row.id}-{row.run}"


# -- the cluster ------------------------------------------------------------------------------
@given(parsers.parse("the GPU host is a Slurm cluster with {gpus:d} GPUs"))
def slurm_host(ws, slurm_cluster, slurm_view, gpus):
    assert slurm_cluster.gpus == gpus
    ws.write_config(transport=slurm_cluster.transport_settings(ws.remote),
                    backend={"kind": "slurm", "command": JOB.replace("{ctl}", str(ws.ctl)),
                             "gpus_per_job": 1})


@given("caseflow submits its Slurm jobs with --no-requeue")
def no_requeue(ws):
    """A job whose node fails then ends NODE_FAIL (Slurm's default, JobRequeue=1, would put it
    back in its queue under the same id, which caseflow follows)."""
    ws.write_config(backend={**ws.settings["backend"], "extra_args": ["--no-requeue"]})


@given(parsers.parse("caseflow gives its Slurm jobs a time limit of {minutes:d} minute"))
def time_limit(ws, minutes):
    ws.write_config(backend={**ws.settings["backend"], "time": str(minutes)})


@given(parsers.parse("caseflow keeps up to {slots:d} jobs of {group} in Slurm's queue"))
def slots_in_queue(ws, slots, group):
    ws.write_config(groups={group: {"slots": slots}})


# -- cases ----------------------------------------------------------------------------------------
@when(parsers.re(r'the case folders (?P<names>.+) for (?P<group>[\w.-]+) whose jobs wait to be '
                 r'released are dropped into the inbox'))
def cases_dropped(ws, names, group):
    for name in _names(names):
        drop(ws, name, group=group, job="waits to be released")


@when("the jobs of all three are released")
def all_released(ws):
    for row in ws.cases():
        ws.release(row.name)


@then(parsers.re(r'the cases (?P<names>.+) end in (?P<state>\w+)'))
def cases_end_in(ws, names, state):
    for name in _names(names):
        case_ends_in(ws, name, state)


@then(parsers.parse('the exit code of "{name}" is {code:d}'))
def exit_code_is(ws, name, code):
    assert shown(ws, name)["exit_code"] == code


# -- what the job and Slurm saw -------------------------------------------------------------------
@then(parsers.parse('the job of "{name}" saw the one GPU Slurm gave it'))
def saw_its_gpu(ws, name):
    env = (results_folder(ws, name) / "job_env.txt").read_text().splitlines()
    assert [v for v in env if v.startswith("CUDA_VISIBLE_DEVICES=")] in \
        (["CUDA_VISIBLE_DEVICES=0"], ["CUDA_VISIBLE_DEVICES=1"]), env
    assert f"CASEFLOW_CASE_NAME={name}" in env


@then(parsers.parse('Slurm ran exactly one job for "{name}", named after the case, and it '
                    '{state}'))
def one_job(ws, slurm_view, name, state):
    jobs = slurm_view.jobs_named(label_of(ws, name))
    assert jobs == {ws.case(name).task_id: state}


@then("two of them run on a GPU each and the third waits in Slurm for resources")
def two_run_one_waits(ws, slurm_view):
    def seen():
        cases = cli_json(ws, "status")
        details = sorted((c["queue_status"] or "", c["name"]) for c in cases)
        if len(cases) == 3 and [d.split(" ")[0] for d, _ in details] == \
                ["PENDING", "RUNNING", "RUNNING"] and details[0][0] == "PENDING (Resources)":
            return details
        return None
    details = wait_for(seen, what="two jobs running and one waiting for resources")
    slurm_view.waiting = details[0][1]
    queue = slurm_view.queue()
    states = sorted(queue[ws.case(n).task_id]["job_state"] for _, n in details)
    assert states == ["PENDING", "RUNNING", "RUNNING"]
    gpus = sorted(g for _, n in details for g in queue[ws.case(n).task_id]["gres_detail"])
    assert gpus == ["gpu:1(IDX:0)", "gpu:1(IDX:1)"]


@then(parsers.parse('caseflow status shows the waiting one as "{detail}"'))
def status_shows_waiting(ws, slurm_view, detail):
    lines = [ln for ln in ws.cli("status", check=True).stdout.splitlines()
             if slurm_view.waiting in ln]
    assert len(lines) == 1 and f"running ({detail})" in lines[0], lines


@given(parsers.parse('the Slurm job of "{name}" is {state}'))
@then(parsers.parse('the Slurm job of "{name}" is {state}'))
def slurm_job_is(ws, slurm_view, name, state):
    job_id = ws.case(name).task_id
    assert job_id and job_id.isdigit(), job_id
    wait_for(lambda: slurm_view.state(job_id) == state, what=f"slurm job {job_id} to be {state}")
    if state == "RUNNING":  # and caseflow has seen it so
        wait_for(lambda: (shown(ws, name)["queue_status"] or "").startswith("RUNNING"),
                 what=f"caseflow to see {name!r} running in Slurm")


# -- the infrastructure's ends and the job's ---------------------------------------------------
@pytest.fixture
def node_back(slurm_cluster):
    """After the scenario, the node is up again, whatever it did to it."""
    yield slurm_cluster.node
    wait_node_up(slurm_cluster)


@when(parsers.parse('the node of the Slurm cluster goes down under the job of "{name}"'))
def node_goes_down(ws, slurm_cluster, node_back, name):
    started = ws.ctl / f"{name}.started"
    wait_for(started.exists, what=f"the job of {name!r} to start")  # not only allocated
    started.unlink()  # the next run's start writes it again
    slurm_cluster.run(["scontrol", "update", f"nodename={node_back}", "state=down",
                       "reason=test"], check=True)


@then(parsers.parse('the history of "{name}" says "{words}"'))
def history_says(ws, slurm_cluster, name, words):
    words = words.replace("node NODE ", f"node {slurm_cluster.node} ")  # the cluster's node

    def found():
        details = [h["detail"] or "" for h in shown(ws, name)["history"]]
        return next((d for d in details if words in d), None)
    wait_for(found, what=f"the history of {name!r} to say {words!r}")


@then(parsers.parse('once the node is back the job of "{name}" runs again in Slurm, as run '
                    '{run:d}'))
def runs_again(ws, slurm_cluster, slurm_view, name, run):
    wait_node_up(slurm_cluster)
    wait_for(lambda: ws.case(name).run == run and ws.case(name).task_id,
             what=f"run {run} of {name!r} to be submitted")
    task = ws.case(name).task_id
    wait_for(lambda: slurm_view.state(task) == "RUNNING", what=f"slurm job {task} to run")
    wait_for((ws.ctl / f"{name}.started").exists, what=f"run {run} of {name!r} to start")
    assert ws.case(name).state == "running"


@then(parsers.parse('Slurm ran two jobs for "{name}": the first {first}, the second {second}'))
def two_jobs(ws, slurm_view, name, first, second):
    row = ws.case(name)
    labels = [f"caseflow-{ws.store.instance_id()}-{row.id}-{run}" for run in (1, 2)]
    jobs = [slurm_view.jobs_named(label) for label in labels]
    assert [list(j.values()) for j in jobs] == [[first], [second]], jobs
    assert list(jobs[1]) == [row.task_id]


@when(parsers.parse('Slurm ends the job of "{name}" at its time limit'))
def at_time_limit(ws, slurm_view, name):
    ws.wait_state(name, "running")
    job_id = wait_for(lambda: ws.case(name).task_id, what=f"the job of {name!r} to be submitted")
    # a limit of 1 minute, Slurm's smallest: it checks the limits every 30 s
    wait_for(lambda: slurm_view.state(job_id) == "TIMEOUT", 150, interval=0.5,
             what=f"slurm job {job_id} to reach its time limit (60-90 s)")


@then(parsers.parse('the case "{name}" is on its {nth} run'))
def nth_run(ws, name, nth):
    assert shown(ws, name)["run"] == ["first", "second", "third"].index(nth) + 1
