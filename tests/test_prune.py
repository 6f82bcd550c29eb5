"""`caseflow prune --ended-before DATE [--export FILE] [--yes] [--no-vacuum]`: ended cases
leave the store (their results, archived folders and job logs stay), with a daemon running
and without one; the export comes first and nothing goes if it fails; a case whose folder is
still in the inbox stays (without it the folder would be taken for a new case and run again);
and how small a store of many ended cases becomes.

Real daemon (in this process), real SQLite store, real inbox folders, the CLI as a process;
the stores of many cases are made with the store's own API, transition by transition."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pexpect
import pytest

from caseflow import prune
from caseflow.spec import load_spec
from harness import DEADLINE, wait_for

FUTURE = "2999-01-01T00:00Z"  # every case that has ended so far
TERMINAL = load_spec().terminal_states
# a case's walk to its end, as the engine commits it: (state, trigger, changes)
WALK = [
    ("stable", "stabilize", {}),
    ("queued", "enqueue", {"grp": "gpu_a", "file_count": 120, "size_bytes": 2_500_000_000}),
    ("gpu_locked", "lock_gpu", {}),
    ("uploaded", "upload", {"host": "local"}),
    ("running", "submit", {}),
]


def make_ended_cases(store, n: int, start: float, inbox, every: float = 600.0) -> list[int]:
    """`n` cases that ran and ended (every fourth in failure), one every `every` seconds
    from `start`, through the store's API as the engine commits them; their folders are not
    in the inbox (archived or deleted)."""
    ids = []
    for i in range(n):
        at = start + i * every
        name = f"sim-{i:06d}-dataset"
        case_id = store.create_case(name, str(inbox / name), f"9:{10_000_000 + i}", "detected",
                                    at, at + 5)
        src = "detected"
        for k, (dst, trigger, changes) in enumerate(WALK):
            changes = dict(changes)
            if dst == "uploaded":
                changes["remote_path"] = f"/scratch/caseflow/{case_id}-{name}"
            if dst == "running":
                changes["task_id"] = str(case_id)
            store.commit_transition(case_id, src, dst, trigger, at + 10 * (k + 1), changes)
            src = dst
        failed = i % 4 == 3
        store.commit_transition(
            case_id, "running", "failure" if failed else "success",
            "fail" if failed else "complete", at + 70,
            {"exit_code": 3 if failed else 0, "job_outcome": "failure" if failed else "success",
             "reason": "job exited with code 3" if failed else None,
             "results_path": f"/srv/caseflow/results/{name}", "results_fetched": 1},
            detail="job exited with code 3" if failed else None,
        )
        ids.append(case_id)
    return ids


def rows_of(store, case_id: int) -> tuple[int, int]:
    """(case rows, history rows) of a case id in the store."""
    conn = store.connection()
    return (conn.execute("SELECT COUNT(*) FROM cases WHERE id = ?", (case_id,)).fetchone()[0],
            conn.execute("SELECT COUNT(*) FROM history WHERE case_id = ?",
                         (case_id,)).fetchone()[0])


def wrapped_up(ws, *names):
    for name in names:
        wait_for(lambda n=name: (r := ws.case(n)) is not None and r.state in TERMINAL
                 and not r.wrapup, what=f"{name!r} to end and be wrapped up")


def full_listing(ws) -> None:
    """Wait until the running daemon has listed the whole inbox after now (a rescan, which
    finds folders whatever events were lost), and ticked twice more."""
    admission = ws.daemon.engine.admission
    mark = time.monotonic()
    rescan = ws.config().rescan_seconds
    wait_for(lambda: admission.next_rescan >= mark + rescan, what="a full listing of the inbox")
    ticks = ws.ticks
    wait_for(lambda: ws.ticks >= ticks + 2, what="two ticks after it")


def remote_folders(ws, name: str) -> list:
    """The case folders uploaded for `name` (one per run of each of its cases)."""
    return sorted(p.name for p in ws.remote.iterdir() if p.name.endswith(f"-{name}"))


def test_prune_with_a_running_daemon_keeps_results_archives_and_logs(ws):
    ws.write_config(archive={"done": "done", "failed": "failed"})
    ws.start()
    ws.drop_case("ok")
    ws.drop_case("bad", exit_code=3)
    ws.drop_case("busy", hold="busy")
    wrapped_up(ws, "ok", "bad")
    ws.wait_state("busy", "running")
    ok, bad = ws.case("ok"), ws.case("bad")
    logs = [ws.database.parent / "logs" / f"{r.id}-1.log" for r in (ok, bad)]
    assert all(p.is_file() for p in logs)
    export = ws.root / "pruned.jsonl"
    out = ws.cli("prune", "--ended-before", FUTURE, "--export", str(export), "--yes")
    assert out.returncode == 0, out
    assert "prune 2 cases that ended before 2999-01-01T00:00:00Z (failure 1, success 1):" \
        in out.stdout, out.stdout
    assert f"case {ok.id} ok: pruned (success)" in out.stdout
    assert f"case {bad.id} bad: pruned (failure)" in out.stdout
    assert "exported 2 cases to" in out.stdout
    assert re.search(r"store .*caseflow\.db: [\d.]+ [KM]?B before, [\d.]+ [KM]?B after",
                     out.stdout), out.stdout
    # gone from the store, with every row of theirs; the active case is untouched
    assert rows_of(ws.store, ok.id) == (0, 0) and rows_of(ws.store, bad.id) == (0, 0)
    assert ws.case("busy").state == "running"
    assert ws.cli("show", "ok").returncode == 1
    # what stays on disk: results, archived folders, kept job logs
    assert (ws.root / "results" / "ok" / "output" / "result.txt").is_file()
    assert (ws.root / "results" / "bad" / "caseflow-job.log").is_file()
    assert (ws.root / "done" / "ok" / "data.bin").is_file()
    assert (ws.root / "failed" / "bad" / "data.bin").is_file()
    assert all(p.is_file() for p in logs)
    # the export: a case a line, status --json's keys and its history
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [(c["id"], c["name"], c["state"]) for c in lines] == \
        sorted([(ok.id, "ok", "success"), (bad.id, "bad", "failure")])  # oldest first
    by_name = {c["name"]: c for c in lines}
    assert by_name["bad"]["reason"] == "job exited with code 3"
    assert [h["to"] for h in by_name["ok"]["history"]] == \
        ["detected", "stable", "queued", "gpu_locked", "uploaded", "running", "success"]
    assert by_name["ok"]["history"][-1]["at"].endswith("Z") and by_name["ok"]["results"]
    # the daemon goes on, and a new case never gets a pruned case's id
    ws.release("busy")
    ws.drop_case("later")
    wrapped_up(ws, "busy", "later")
    assert ws.case("later").id > max(ok.id, bad.id)
    # a second prune adds to the export; the earlier lines stay as they were
    before = export.read_text()
    out = ws.cli("prune", "--ended-before", FUTURE, "--export", str(export), "--yes")
    assert out.returncode == 0 and "pruned (success)" in out.stdout, out
    text = export.read_text()
    assert text.startswith(before)
    assert [json.loads(line)["name"] for line in text.splitlines()][2:] == ["busy", "later"]
    assert ws.store.cases() == []
    out = ws.cli("prune", "--ended-before", FUTURE, "--yes")
    assert out.returncode == 0 and "no case to prune" in out.stdout, out


def test_a_case_whose_folder_is_in_the_inbox_stays_and_never_runs_again(ws):
    """The danger: a pruned case whose folder is still in the inbox would be a new case for
    the daemon (at its next start, or after its memory of the inbox is gone) and its job
    would run again. Such a case stays; once its folder has left the inbox it can go."""
    ws.write_config(stability={"quiet_seconds": 0.5, "rescan_seconds": 0.2})
    ws.start()
    ws.drop_case("stays")
    ws.drop_case("moved")
    wrapped_up(ws, "stays", "moved")
    stays, moved = ws.case("stays"), ws.case("moved")
    assert remote_folders(ws, "stays") == [f"{stays.id}-stays"]
    os.rename(ws.inbox / "moved", ws.root / "moved-away")  # the operator moved it out
    out = ws.cli("prune", "--ended-before", FUTURE, "--yes", check=True)
    assert "prune 1 case" in out.stdout and f"case {moved.id} moved: pruned" in out.stdout
    assert "kept: 1 case whose folder is still in the inbox" in out.stdout, out.stdout
    assert f"case {stays.id} stays: {ws.inbox / 'stays'}" in out.stdout
    assert ws.case("stays") == stays and ws.case("moved") is None
    full_listing(ws)
    assert [r.id for r in ws.cases("stays")] == [stays.id]
    # without a daemon, and across a restart (the daemon's memory of the inbox is gone)
    ws.stop()
    out = ws.cli("prune", "--ended-before", FUTURE, "--yes", check=True)
    assert "no case to prune" in out.stdout and "kept: 1 case" in out.stdout, out.stdout
    ws.start()
    full_listing(ws)
    assert [(r.id, r.state, r.run) for r in ws.cases("stays")] == [(stays.id, "success", 1)]
    assert remote_folders(ws, "stays") == [f"{stays.id}-stays"]  # its job ran once
    # once its folder has left the inbox, the case goes; the folder copied in again later
    # is a new case (as it is for any case that left the inbox), with a new id
    os.rename(ws.inbox / "stays", ws.root / "stays-away")
    out = ws.cli("prune", "--ended-before", FUTURE, "--yes", check=True)
    assert f"case {stays.id} stays: pruned" in out.stdout, out.stdout
    ws.stop()
    ws.start()
    full_listing(ws)
    assert ws.store.cases() == []
    os.rename(ws.root / "stays-away", ws.inbox / "stays")
    again = ws.wait_state("stays", "success")
    assert again.id > max(stays.id, moved.id)


def test_a_newer_case_of_the_same_folder_stands_for_it(ws):
    """A folder replaced in the inbox became a second case: the first one can go (the
    second, whose folder is there, is what the daemon knows the folder by)."""
    ws.start()
    ws.drop_case("twice")
    wrapped_up(ws, "twice")
    first = ws.case("twice")
    os.rename(ws.inbox / "twice", ws.root / "old-copy")
    wait_for(lambda: "twice" not in ws.daemon.engine.folders.names(),
             what="the daemon to see the folder go")
    ws.drop_case("twice", files={"new.bin": b"y" * 10})
    wait_for(lambda: len(ws.cases("twice")) == 2, what="the new copy to be a case")
    wrapped_up(ws, "twice")
    second = ws.case("twice")
    out = ws.cli("prune", "--ended-before", FUTURE, "--yes", check=True)
    assert f"case {first.id} twice: pruned" in out.stdout, out.stdout
    assert f"case {second.id} twice: {ws.inbox / 'twice'}" in out.stdout  # kept
    ws.stop()
    ws.start()
    full_listing(ws)
    assert [r.id for r in ws.cases("twice")] == [second.id]


def test_cases_with_something_left_to_do_stay(ws):
    """An ended case whose wrap-up (here its on_finish hook) has not finished, or that an
    operator asked to retry, is not pruned; what is changed between the listing and the
    removal stays too."""
    ws.write_config(on_finish=f"while [ ! -e {ws.ctl}/release-hook ]; do sleep 0.05; done")
    ws.start()
    ws.drop_case("hooked")
    ws.wait_state("hooked", "success")
    assert ws.case("hooked").wrapup
    out = ws.cli("prune", "--ended-before", FUTURE, "--yes", check=True)
    assert "no case to prune" in out.stdout
    assert "not yet: 1 case that ended before 2999-01-01T00:00:00Z still wait" in out.stdout
    assert ws.case("hooked") is not None
    ws.release("hook")
    wrapped_up(ws, "hooked")
    ws.stop()
    # planned, then retried before the removal: it stays (the function the command calls)
    config, store = ws.config(), ws.store
    planned = prune.plan(store, config.inbox, time.time() + 1, TERMINAL)
    assert [r.name for r in planned.prune] == []  # its folder is in the inbox
    os.rename(ws.inbox / "hooked", ws.root / "hooked-away")
    planned = prune.plan(store, config.inbox, time.time() + 1, TERMINAL)
    assert [r.name for r in planned.prune] == ["hooked"]
    store.set_request(planned.prune[0].id, "retry")  # what `caseflow retry` records
    done = prune.carry_out(store, config.inbox, planned, TERMINAL)
    assert done.removed == [] and [r.name for r in done.changed] == ["hooked"]
    assert ws.case("hooked").request == "retry"


def test_mistakes_change_nothing_and_a_failed_export_removes_nothing(ws):
    ws.stop()
    ws.store.migrate()
    ids = make_ended_cases(ws.store, 3, time.time() - 3 * 86400, ws.inbox)
    count = lambda: len(ws.store.cases())  # noqa: E731
    (ws.root / "notes.txt").write_text("my notes\n")
    for args, rc, words in (
        (("--ended-before", "yesterday"), 2, "--ended-before 'yesterday': not a date or time"),
        (("--ended-before", "0001-01-01"), 2, "not a date or time"),
        ((), 2, "the following arguments are required: --ended-before"),
        (("--ended-before", FUTURE, "--export", str(ws.root / "nowhere" / "x.jsonl"), "--yes"),
         2, f"the folder {ws.root / 'nowhere'} does not exist"),
        (("--ended-before", FUTURE, "--export", str(ws.root / "notes.txt"), "--yes"),
         2, "is not an export of `caseflow prune`"),
        (("--ended-before", FUTURE), 2, "add --yes to prune these 3 cases (no terminal"),
    ):
        out = ws.cli("prune", *args)
        assert out.returncode == rc and words in out.stderr, (args, out)
        assert "Traceback" not in out.stderr
        assert count() == 3
    assert (ws.root / "notes.txt").read_text() == "my notes\n"
    # a cut-off before every end selects nothing
    out = ws.cli("prune", "--ended-before", "2000-01-01", "--yes", check=True)
    assert "no case to prune" in out.stdout and count() == 3
    # the export's disk is full: the command fails, saying so, and removes nothing
    full = ws.root / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(full)]).returncode:
        pytest.fail("mounting a tmpfs failed (the tests run as root)")
    try:
        (full / "filler").write_bytes(b"x" * 4096)
        out = ws.cli("prune", "--ended-before", FUTURE, "--export", str(full / "p.jsonl"),
                     "--yes")
        assert out.returncode == 1, out
        assert "No space left on device; nothing was pruned" in out.stderr, out.stderr
        assert sorted(p.name for p in full.iterdir()) == ["filler"]  # no temporary file left
    finally:
        subprocess.run(["umount", "-l", str(full)], check=True)
    assert [r.id for r in ws.store.cases()] == ids


def test_the_question_and_its_answers(ws):
    ws.store.migrate()
    make_ended_cases(ws.store, 2, time.time() - 86400, ws.inbox)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    args = ["-m", "caseflow.cli", "prune", "--ended-before", FUTURE, "-c", str(ws.config_path)]
    for answer, rc, said in (("n", 1, "nothing done"), ("y", 0, r"pruned \(success\)")):
        child = pexpect.spawn(sys.executable, args, env=env, encoding="utf-8", timeout=DEADLINE)
        child.expect("prune 2 cases that ended before")
        child.expect(r"go on\? \[y/N\] ")
        child.sendline(answer)
        child.expect(said)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == rc
        assert len(ws.store.cases()) == (2 if answer == "n" else 0)


def test_many_cases_are_counted_and_a_pruned_store_is_small(ws):
    """A store of many ended cases (CASEFLOW_PRUNE_CASES, default 2,000; the report's
    measurement: 20,000) pruned but for its last days: the command counts instead of listing
    every case. With --no-vacuum the space stays inside the file, free for new cases; without
    it (a second prune) the file shrinks to what stays."""
    n = int(os.environ.get("CASEFLOW_PRUNE_CASES", "2000"))
    ws.store.migrate()
    start = time.time() - n * 600 - 86400
    t = time.monotonic()
    ids = make_ended_cases(ws.store, n, start, ws.inbox)
    made = time.monotonic() - t
    ws.store.checkpoint()
    size_before = ws.store.file_size()

    def cut_at(index: int) -> str:  # the cases from ids[index] on ended after it
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + index * 600 + 1))

    t = time.monotonic()
    out = ws.cli("prune", "--ended-before", cut_at(n - 288), "--yes", "--no-vacuum",
                 timeout=DEADLINE * 10, check=True)
    took_prune = time.monotonic() - t
    pruned = n - 288
    assert f"prune {pruned:,} cases that ended before" in out.stdout, out.stdout
    assert f"... and {pruned - 20:,} more" in out.stdout  # the first 20 listed
    assert f"pruned {pruned:,} cases" in out.stdout and ": pruned (" not in out.stdout
    assert "of it free, which new cases reuse" in out.stdout
    size_kept = ws.store.file_size()
    free = ws.store.free_bytes()
    assert size_kept >= size_before * 0.9  # the space is inside the file, free
    assert free >= size_before * 0.8
    assert [r.id for r in ws.store.cases()] == ids[-288:]
    t = time.monotonic()
    out = ws.cli("prune", "--ended-before", cut_at(n - 144), "--yes", timeout=DEADLINE * 10,
                 check=True)
    took_vacuum = time.monotonic() - t
    assert "pruned 144 cases" in out.stdout and "of it free" not in out.stdout, out.stdout
    size_after = ws.store.file_size()
    assert size_after < size_before * 0.2, (size_before, size_after)
    assert [r.id for r in ws.store.cases()] == ids[-144:]
    new = ws.store.create_case("new", str(ws.inbox / "new"), "9:1", "detected", time.time(),
                               time.time())
    assert new > ids[-1]  # ids are never reused, VACUUM or not
    print(f"\n{n:,} ended cases made in {made:.1f} s: store {size_before:,} B. "
          f"`prune --no-vacuum` of {pruned:,}: {took_prune:.1f} s, file {size_kept:,} B "
          f"({free:,} B free inside). `prune` of 144 more (VACUUM): {took_vacuum:.1f} s, "
          f"file {size_after:,} B")
