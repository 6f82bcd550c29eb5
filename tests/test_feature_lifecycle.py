"""Steps of features/lifecycle.feature: success, a failing job, retry and cancel."""

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

# the shared steps assert with plain `assert`; let pytest explain their failures
pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403  (shared steps become fixtures here)
from bdd_steps import shown  # noqa: E402
from harness import RunningCommand, wait_for  # noqa: E402

scenarios("lifecycle.feature")


@when(parsers.parse('the operator deletes the file "{file}" from the inbox folder "{name}"'))
def delete_file(ws, file, name):
    (ws.inbox / name / file).unlink()


@then(parsers.parse('the case "{name}" is on its second run'))
def second_run(ws, name):
    assert shown(ws, name)["run"] == 2


@then(parsers.parse('the result of "{name}" is in its folder on the GPU host'))
def result_on_host(ws, name):
    case = shown(ws, name)
    result = ws.remote_folder(name) / "output" / "result.txt"
    assert result.read_text().strip() == f"result of {case['id']}"


@when(parsers.parse('the operator writes "{text}" into the file "{file}" of the inbox folder '
                    '"{name}"'))
def write_file(ws, text, file, name):
    (ws.inbox / name / file).write_text(text)


@then(parsers.parse('the results of both runs of "{name}" are kept'))
def both_runs_kept(ws, name):
    case = shown(ws, name)
    now = ws.root / "results" / name
    earlier = ws.root / "results" / f"{name}.run-1"
    assert "CASEFLOW_RUN=2" in (now / "job_env.txt").read_text()
    assert "CASEFLOW_RUN=1" in (earlier / "job_env.txt").read_text()
    assert (earlier / "caseflow-job.log").exists() and (now / "caseflow-job.log").exists()
    assert case["remote_path"].rsplit("/", 1)[1].startswith(f"{case['id']}-run2-")


@given(parsers.parse('the case "{name}" for {group} is running and its job takes {n:d} seconds '
                     'to stop'))
def running_slow_to_stop(ws, name, group, n):
    ws.drop_case(name, group=group, hold=name, files={"stop_seconds": str(n)})
    ws.wait_state(name, "running")
    wait_for(lambda: (ws.ctl / f"{name}.started").exists(), what=f"the job of {name!r}")


@when(parsers.parse('the operator cancels "{name}" without waiting'))
def cancel_no_wait(ws, name):
    proc = ws.cli("cancel", name, "--no-wait")
    assert proc.returncode == 0, proc.stderr


@then(parsers.parse('the case "{name}" is stopping its job and holds its GPU slot'))
def stopping(ws, name):
    row = wait_for(lambda: (r := ws.case(name)).reason and r, what=f"{name!r} to stop its job")
    assert row.state == "running" and row.slot_index is not None, row
    assert "stopping its job" in ws.cli("status", check=True).stdout


@then(parsers.parse('the job of "{later}" started only after the job of "{earlier}" had '
                    'stopped'))
def started_after(ws, later, earlier):
    wait_for(lambda: (ws.ctl / f"{later}.started").exists(), what=f"the job of {later!r}")
    ws.release(later)
    stopped = float((ws.ctl / f"{earlier}.stopped").read_text())
    started = float((ws.ctl / f"{later}.started").read_text())
    assert started >= stopped, f"{later} started at {started}, {earlier} stopped at {stopped}"


@pytest.fixture
def following():
    """`caseflow logs -f` processes a scenario started, by case name."""
    running: dict[str, RunningCommand] = {}
    yield running
    for proc in running.values():
        if proc.proc.poll() is None:
            proc.proc.kill()
        proc.end()


@when(parsers.parse('the operator follows the log of "{name}"'))
def follow_log(ws, following, name):
    following[name] = RunningCommand(ws.config_path, "logs", "-f", name)


@then(parsers.parse('the operator sees "{words}" in the log of "{name}" while its job runs'))
def sees_in_log(ws, following, words, name):
    following[name].wait_out(words)
    assert following[name].proc.poll() is None and ws.case(name).state == "running"


@then(parsers.parse('following the log of "{name}" ends by itself, saying it ended in {state:w}'))
def follow_ends(ws, following, name, state):
    proc = following[name]
    assert proc.end() == 0, proc.err
    assert f"{name} ended: {state}" in proc.err, proc.err


@then(parsers.parse('caseflow shows how long "{name}" spent in {phases}, together its total'))
def durations_shown(ws, name, phases):
    names = [p.strip() for p in phases.replace(" and ", ", ").split(",")]
    found = shown(ws, name)["durations"]
    assert [k.replace("_", " ") for k in found][:-1] == names and list(found)[-1] == "total"
    assert all(v is not None and v >= 0 for v in found.values()), found
    assert sum(found[k] for k in list(found)[:-1]) == pytest.approx(found["total"], abs=0.01)
    text = ws.cli("show", name, check=True).stdout
    block = text.split("\ndurations (run 1", 1)[1].split("\n\n", 1)[0]
    assert [line.split("  ")[1].strip() for line in block.splitlines()[1:]] == [*names, "total"]


@then(parsers.parse('the start and end of the job of "{name}" are those the GPU host noted'))
def job_times_noted(ws, name):
    row, notes = ws.case(name), ws.remote_folder(name) / ".caseflow"
    assert shown(ws, name)["job_times"]["source"] == "queue"
    assert row.job_started == pytest.approx(float((notes / "started").read_text()), abs=1e-6)
    assert row.job_ended == pytest.approx(float((notes / "ended").read_text()), abs=1e-6)
