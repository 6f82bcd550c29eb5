"""Steps of features/results.feature: results and logs come home, archiving, remote
clean-up, the on_finish hook, priority, and pruning ended cases from the store."""

import datetime
import json
import subprocess
import time
from pathlib import Path

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403  (shared steps become fixtures here)
from bdd_steps import TERMINAL, results_folder, shown  # noqa: E402
from harness import wait_for  # noqa: E402

scenarios("results.feature")


# -- configuration -------------------------------------------------------------------------
@given(parsers.parse('finished cases are archived to "{done}" and "{failed}"'))
def archived_to(ws, done, failed):
    ws.write_config(archive={"done": done, "failed": failed})


@given(parsers.parse("the results folder has room for only {size:d} KB"))
def tiny_results(ws, context, size):
    folder = ws.root / "results"
    folder.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}k", "tmpfs",
                       str(folder)]).returncode != 0:
        pytest.fail("mounting a tmpfs failed (the tests run as root)")
    context.mounts.append(folder)


@when("the results folder has room again")
def results_room_again(ws, context):
    folder = ws.root / "results"
    subprocess.run(["umount", "-l", str(folder)], check=True)
    context.mounts.remove(folder)


@given("the on_finish hook records the case it is run for and then exits with code 5")
def failing_hook(ws):
    ws.write_config(on_finish='printf "%s|%s|%s|%s|%s\\n" "$CASEFLOW_CASE_NAME" '
                              '"$CASEFLOW_STATE" "$CASEFLOW_EXIT_CODE" "$CASEFLOW_RESULTS" '
                              '"$CASEFLOW_REASON" >> hook.log; echo "the hook failed" >&2; exit 5')


# -- cases ---------------------------------------------------------------------------------
@given(parsers.parse('an earlier case folder "{name}" is already in "{where}"'))
def earlier_in(ws, name, where):
    ws.make_case(name, where=ws.root / where, files={"earlier.txt": "an earlier case"})


@given(parsers.parse('the case "{name}" for {group} with priority {priority:d} waits in the queue'))
def queued_with_priority(ws, name, group, priority):
    ws.drop_case(name, group=group, priority=priority, hold=name)
    ws.wait_state(name, "queued")


@then(parsers.parse('the case "{name}" is still queued'))
def still_queued(ws, name):
    assert ws.case(name).state == "queued"


@then(parsers.parse('the case "{name}" stays running, retrying to fetch its results'))
def retrying_fetch(ws, name):
    def retrying():
        row = ws.case(name)
        if row is None:
            return None
        assert row.state not in TERMINAL, f"{name!r} ended in {row.state}: {row.reason}"
        return row if row.attempts >= 1 and row.job_outcome else None
    row = wait_for(retrying, what=f"{name!r} to retry fetching its results")
    assert row.state == "running" and "no space left" in (row.last_error or "").lower(), \
        row.last_error
    status = ws.cli("status", check=True).stdout
    assert "job ended: success; fetching results" in status, status


@then(parsers.parse('the case "{name}" ends in success once its results are home'))
def success_after_fetch(ws, name):
    row = ws.wait_state(name, *TERMINAL)
    assert row.state == "success", row.reason


@when(parsers.parse('the operator deletes the file "{file}" from the archived folder "{name}"'))
def delete_archived_file(ws, file, name):
    folder = Path(shown(ws, name)["local_path"])
    assert folder.parent != ws.inbox
    (folder / file).unlink()


# -- results -------------------------------------------------------------------------------
@then(parsers.parse('caseflow show "{name}" says where its results are'))
def show_says_results(ws, name):
    out = ws.cli("show", name, check=True).stdout
    assert f"results are in {results_folder(ws, name)}" in out, out


@then(parsers.parse('caseflow show "{name}" prints the last lines of its job log'))
def show_prints_log(ws, name):
    out = ws.cli("show", name, check=True).stdout
    assert "job log (" in out and "job of case" in out, out


# -- archiving and the GPU host --------------------------------------------------------------
@then("the inbox becomes empty")
def inbox_empty(ws):
    wait_for(lambda: not any(ws.inbox.iterdir()), what="the inbox to be empty")


def archived(ws, name, where) -> Path:
    def moved():
        case = shown(ws, name)
        return case if case["wrapup"] is None and Path(case["local_path"]).parent == \
            ws.root / where else None
    case = wait_for(moved, what=f"{name!r} to be moved to {where}")
    folder = Path(case["local_path"])
    assert folder.is_dir() and (folder / "data.bin").exists()
    return folder


@then(parsers.parse('the case folder "{name}" is in "{where}" under a new name, next to the '
                    'earlier one'))
def archived_renamed(ws, name, where):
    folder = archived(ws, name, where)
    assert folder.name != name and folder.name.startswith(name)
    assert (ws.root / where / name / "earlier.txt").read_text() == "an earlier case"


@given(parsers.parse('the case folder "{name}" is in "{where}"'))
@then(parsers.parse('the case folder "{name}" is in "{where}"'))
def archived_as_is(ws, name, where):
    assert archived(ws, name, where).name == name


@then(parsers.parse("caseflow knows exactly {count:d} cases, and none of them vanished"))
def known_cases(ws, count):
    rows = ws.cases()
    assert len(rows) == count, [(r.id, r.name, r.state) for r in rows]
    for row in rows:
        assert row.state in TERMINAL and "no longer" not in (row.reason or ""), row


# -- the hook ------------------------------------------------------------------------------
@then(parsers.parse('the hook ran once, for "{name}" in {state} with exit code {code:d} and '
                    'its results folder'))
def hook_ran(ws, name, state, code):
    log = ws.root / "hook.log"
    wait_for(lambda: shown(ws, name)["wrapup"] is None, what="the wrap-up to finish")
    lines = log.read_text().splitlines()
    assert lines == [f"{name}|{state}|{code}|{results_folder(ws, name)}|"], lines


@then(parsers.parse('caseflow show "{name}" notes "{words}"'))
def show_notes(ws, name, words):
    assert words in (shown(ws, name)["wrapup_note"] or "")
    assert "the hook failed" in shown(ws, name)["wrapup_note"]


# -- pruning -------------------------------------------------------------------------------
@when(parsers.re(r"the operator prunes the cases that ended before tomorrow"
                 r'(?:, exporting them to "(?P<export>[^"]+)")?'))
def operator_prunes(ws, context, export):
    # an ended case is pruned once its wrap-up (archiving, the hook) is done: what an operator
    # pruning cases of days ago sees
    wait_for(lambda: not any(r.wrapup for r in ws.cases()), what="the wrap-ups to finish")
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    args = ["prune", "--ended-before", tomorrow, "--yes"]
    if export:
        args += ["--export", str(ws.root / export)]
    context.pruned = ws.cli(*args, check=True).stdout


@then(parsers.parse('caseflow no longer knows "{name}"'))
def no_longer_known(ws, context, name):
    assert f"{name}: pruned (success)" in context.pruned, context.pruned
    out = ws.cli("show", name)
    assert out.returncode == 1 and f"no case with id or name {name!r}" in out.stderr, out
    assert ws.cli("status", "--json", check=True).stdout.strip() == "[]"


@then(parsers.parse('"{export}" holds "{name}" with its history, from {first} to {last}'))
def export_holds(ws, export, name, first, last):
    cases = [json.loads(line) for line in (ws.root / export).read_text().splitlines()]
    assert [c["name"] for c in cases] == [name]
    history = [h["to"] for h in cases[0]["history"]]
    assert history[0] == first and history[-1] == last == cases[0]["state"], history


@then(parsers.parse('the results of "{name}" stay in "{where}"'))
def results_still_there(ws, name, where):
    assert (ws.root / where / name / "output" / "result.txt").is_file()
    assert (ws.root / where / name / "caseflow-job.log").is_file()


@then(parsers.parse('the case folder "{name}" is still in "{where}"'))
def folder_still_there(ws, name, where):
    assert (ws.root / where / name / "data.bin").is_file()


@then(parsers.parse('caseflow says it kept "{name}", whose folder is still in the inbox'))
def kept_in_inbox(ws, context, name):
    assert "kept: 1 case whose folder is still in the inbox" in context.pruned, context.pruned
    assert f"{name}: {ws.inbox / name}" in context.pruned
    assert ws.case(name).state == "success"


@then(parsers.parse('caseflow knows "{name}" as one case, whose job ran once'))
def one_case_one_job(ws, name):
    # the daemon lists the whole inbox at its start (and every rescan_seconds): wait for a
    # listing made after now, and two ticks after it
    admission = ws.daemon.engine.admission
    mark = time.monotonic()
    rescan = ws.config().rescan_seconds
    wait_for(lambda: admission.next_rescan >= mark + rescan, what="a listing of the inbox")
    ticks = ws.ticks
    wait_for(lambda: ws.ticks >= ticks + 2, what="two ticks after it")
    assert [(r.state, r.run) for r in ws.cases(name)] == [("success", 1)]
    assert len(list(ws.remote.glob(f"*-{name}"))) == 1  # one upload, one job
