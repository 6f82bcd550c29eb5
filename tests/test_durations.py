"""Durations per case (caseflow.durations): cases through the real daemon on the local/direct
default and over the real sshd to a real pueued (3.4.1 and 4.0.4), in `status --json`, `show`,
the status table, the status page and the `caseflow_case_phase_seconds` histograms of a real
scrape, across a retry and a restart; and the rules that split a run into phases, on the real
spec.

What is checked against what caseflow did not compute itself: the job notes its own start
(the harness job writes <ctl>/<name>.started first: its mtime), pueue's own status JSON, the
moment the test released the held job, and the history's transition times."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from caseflow import durations
from caseflow.backends import RUNNING, SUCCESS, JobRef, JobStatus
from caseflow.backends.times import zone_offset
from caseflow.spec import load_spec
from caseflow.store import HistoryRow, JobTimes, Store
from caseflow.store.schema import MIGRATIONS, SCHEMA_VERSION
from harness import JOB, wait_for
from pueue_daemon import VERSIONS, PueueDaemon
from sshd import SSHServer, transport_settings
from test_metrics import scrape, value
from webtools import WEB, get_json, request

SPEC = load_spec()
PHASES = list(durations.PHASES)


def listed(ws, name: str) -> dict:
    """The case as `caseflow status --json` (a real process) lists it."""
    out = json.loads(ws.cli("status", "--json", check=True).stdout)
    return [c for c in out if c["name"] == name][-1]


def at(ws, row, dst: str) -> float:
    """When the case's current run came into `dst` (its last history row into it)."""
    return [h.at for h in ws.store.history(row.id) if h.dst == dst][-1]


def assert_consistent(case: dict) -> None:
    d = case["durations"]
    assert list(d) == [*PHASES, "total"], d
    known = [d[p] for p in PHASES if d[p] is not None]
    assert all(v >= 0 for v in known) and d["total"] >= 0, d
    assert sum(known) == pytest.approx(d["total"], abs=0.01), d


def assert_job_within(ws, row) -> None:
    """The job's start lies between the submit (the upload's end) and its end, its end before
    the case ended; the start is the job's own (its first command's file, a moment later)."""
    submitted, ended = at(ws, row, "uploaded"), at(ws, row, row.state)
    assert submitted <= row.job_started <= row.job_ended <= ended, \
        (submitted, row.job_started, row.job_ended, ended)
    noted = (ws.ctl / f"{row.name}.started").stat().st_mtime
    assert row.job_started <= noted + 0.05 and noted - row.job_started < 5, (row, noted)


# -- the local/direct default -----------------------------------------------------------------
def test_a_case_through_the_daemon_has_durations_that_add_up(ws):
    ws.start()
    ws.drop_case("timed", hold="t1")
    row = wait_for(lambda: (r := ws.case("timed")) and r.job_started and r, what="a job start")
    running = listed(ws, "timed")
    assert_consistent(running)
    d = running["durations"]
    # the wrapper's times come with the exit code: while it runs, the poll saw it start
    assert running["job_times"]["source"] == "observed" and running["job_times"]["ended"] is None
    assert d["quiet"] >= 0.5 and d["queue_wait"] is not None and d["results"] is None
    assert d["run"] is not None
    released = time.time()
    ws.release("t1")
    row = ws.wait_state("timed", "success")
    case = listed(ws, "timed")
    assert_consistent(case)
    assert case["job_times"]["source"] == "queue"  # the direct runner's wrapper said
    assert_job_within(ws, row)
    assert row.job_ended >= released
    d = case["durations"]
    assert d["quiet"] == pytest.approx(at(ws, row, "stable") - row.created_at, abs=0.002)
    assert d["upload"] == pytest.approx(at(ws, row, "uploaded") - at(ws, row, "gpu_locked"),
                                        abs=0.002)
    assert d["run"] == pytest.approx(row.job_ended - row.job_started, abs=0.002)
    assert d["total"] == pytest.approx(at(ws, row, "success") - row.created_at, abs=0.002)
    assert d["run"] >= released - row.job_started - 0.01
    # `show`: the block; `show --json`: the same; the status table: the total
    show = ws.cli("show", "timed", check=True).stdout
    assert "durations (run 1; the job's start and end as its queue reported them):" in show
    assert re.search(r"^  run +\d+\.\d s$", show, re.M), show
    assert re.search(r"^  results +\d+\.\d s$", show, re.M), show
    detail = json.loads(ws.cli("show", "--json", "timed", check=True).stdout)
    assert detail["durations"] == case["durations"]
    table = ws.cli("status", check=True).stdout.splitlines()
    head = table[0].split()
    assert head[:8] == ["ID", "NAME", "STATE", "GROUP", "HOST", "SLOT", "TASK", "TIME"], head
    cells = [ln for ln in table if " timed " in ln][0].split()
    assert cells[7] == durations.short(d["total"]), cells


def test_a_retried_case_shows_its_latest_run_and_the_histograms_count_each_run_once(ws):
    ws.write_config(web=WEB)
    url = ws.start().web.url
    ws.drop_case("again", exit_code=3)
    first = ws.wait_state("again", "failure")
    first_total = listed(ws, "again")["durations"]["total"]
    (ws.inbox / "again" / "exit_code").unlink()
    assert ws.cli("retry", "again").returncode == 0
    row = wait_for(lambda: (r := ws.case("again")) and r.run == 2 and r.state == "success" and r,
                   what="the second run to succeed")
    case = listed(ws, "again")
    assert_consistent(case)
    assert_job_within(ws, row)
    retried = at(ws, row, "stable")  # the retry: failure -> stable
    d = case["durations"]
    assert d["quiet"] is None  # a retry starts at stable
    assert d["total"] == pytest.approx(at(ws, row, "success") - retried, abs=0.002)
    assert row.job_started > at(ws, first, "failure")  # run 2's job, not run 1's
    show = ws.cli("show", "again", check=True).stdout
    assert "durations (run 2;" in show and re.search(r"^  quiet +-$", show, re.M), show

    # the histograms: both runs, each once; per group and the state each run ended in
    text = scrape(url)
    name = "caseflow_case_phase_seconds"
    assert value(text, f"{name}_count", phase="total", group="gpu_a", state="failure") == 1
    assert value(text, f"{name}_count", phase="total", group="gpu_a", state="success") == 1
    assert value(text, f"{name}_sum", phase="total", state="success") == \
        pytest.approx(d["total"], abs=0.01)
    assert value(text, f"{name}_sum", phase="total", state="failure") == \
        pytest.approx(first_total, abs=0.01)
    assert value(text, f"{name}_count", phase="quiet", state="success") == 0  # (the retry's)
    assert value(text, f"{name}_count", phase="quiet", state="failure") == 1
    assert value(text, f"{name}_bucket", phase="total", state="success", le="+Inf") == 1
    assert value(text, f"{name}_count", phase="run", group="gpu_b") == 0  # declared, at 0
    ws.drop_case("third")
    ws.wait_state("third", "success")
    later = scrape(url)
    assert value(later, f"{name}_count", phase="total", state="success") == 2
    assert value(later, f"{name}_count", phase="total", state="failure") == 1  # not again
    # a restart reads the history again: the same counts, none twice, none lost
    ws.stop()
    url = ws.start().web.url
    again = scrape(url)
    for phase in [*PHASES, "total"]:
        for state in ("success", "failure"):
            assert value(again, f"{name}_count", phase=phase, state=state) == \
                value(later, f"{name}_count", phase=phase, state=state), (phase, state)
            assert value(again, f"{name}_sum", phase=phase, state=state) == \
                pytest.approx(value(later, f"{name}_sum", phase=phase, state=state)), phase

    # the page: the case list's Time column and the case's durations
    body = request(url, "/cases")[2].decode()
    assert '<th scope="col" title="the current run' in body and ">Time</th>" in body
    page = request(url, f"/cases/{row.id}")[2].decode()
    assert '<section id="durations"><h2>Durations (run 2)</h2>' in page
    assert '<td class="num" data-phase="quiet">–</td>' in page
    assert re.search(r'data-phase="run">\d+\.\d s<', page), page
    assert "as its queue reported them" in page
    api = get_json(url, f"/api/cases/{row.id}")
    assert api["durations"] == case["durations"] and api["job_times"] == case["job_times"]
    listing = get_json(url, "/api/cases")["cases"]
    assert [c["durations"] for c in listing if c["id"] == row.id] == [case["durations"]]


def test_a_job_running_when_caseflow_was_upgraded_is_not_given_a_start_it_did_not_have(ws):
    """A database from before the job times (schema v8) with a case whose job runs: the
    daemon's polls must not take the first look after the upgrade for the job's start."""
    ws.start()
    ws.drop_case("old", hold="o")
    ws.wait_state("old", "running")
    ws.stop()
    conn = sqlite3.connect(ws.database)  # as v8 left it: no job times
    conn.execute("UPDATE cases SET job_started = NULL, job_ended = NULL,"
                 " job_times_source = 'unknown'")
    conn.execute("UPDATE history SET job_started = NULL, job_ended = NULL,"
                 " job_times_source = 'unknown'")
    conn.commit()
    conn.close()
    (ws.remote_folder("old") / ".caseflow" / "started").unlink()  # an older wrapper's job
    ws.start()
    ws.release("o")
    row = ws.wait_state("old", "success")
    assert row.job_started is None and row.job_times_source == "unknown"
    d = listed(ws, "old")["durations"]
    assert d["queue_wait"] is None and d["run"] is None and d["results"] is None
    assert d["quiet"] is not None and d["total"] is not None


def test_the_migration_marks_the_cases_and_history_of_an_older_database(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    for v, script in enumerate(MIGRATIONS[:8]):
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {v + 1}")
    conn.execute("INSERT INTO cases (name, local_path, state, next_attempt_at, created_at,"
                 " updated_at) VALUES ('was-running', '/x', 'running', 0, 0, 0)")
    conn.execute("INSERT INTO history (case_id, src, dst, trigger, at) VALUES"
                 " (1, NULL, 'detected', 'detect', 0)")
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.migrate() == SCHEMA_VERSION
    assert store.get(1).job_times_source == "unknown"
    assert [h.job_times_source for h in store.history(1)] == ["unknown"]
    store.close()


# -- over the real sshd to a real pueued ----------------------------------------------------------
@pytest.fixture(params=VERSIONS)
def pueue_host(request, ws):
    """A GPU host: a real sshd whose sessions find a real pueued's client as `pueue`."""
    server = SSHServer(ws.root / "pueuehost").start()
    daemon = PueueDaemon(ws.root / "pueue", request.param).start()
    (server.bin / "pueue").symlink_to(daemon.client)
    ws.write_config(transport=transport_settings(server, ws.remote),
                    backend={"kind": "pueue", "command": JOB.replace("{ctl}", str(ws.ctl))})
    yield daemon
    ws.stop()
    daemon.close()
    server.stop()


def test_over_ssh_with_pueue_the_job_times_are_pueues_own(ws, pueue_host):
    ws.start()
    ws.drop_case("queued-a", hold="a", group="gpu_b")  # gpu_b has one slot: one at a time
    ws.drop_case("timed", hold="b")
    row = wait_for(lambda: (r := ws.case("timed")) and r.job_started and r, what="a job start")
    assert row.job_times_source == "queue"  # pueue says when it started the task, while it runs
    ws.release("b")
    ws.release("a")
    row = ws.wait_state("timed", "success")
    case = listed(ws, "timed")
    assert_consistent(case)
    assert case["job_times"]["source"] == "queue"
    assert_job_within(ws, row)
    task = next(t for t in pueue_host.tasks().values()
                if t.get("label", "").endswith(f"-{row.id}-1"))
    times = task if "start" in task else task["status"]["Done"]  # pueue 3.x, 4.x
    assert row.job_started == pytest.approx(_rfc3339(times["start"]), abs=0.001)
    assert row.job_ended == pytest.approx(_rfc3339(times["end"]), abs=0.001)
    assert case["durations"]["run"] == pytest.approx(row.job_ended - row.job_started, abs=0.002)
    assert_consistent(listed(ws, "queued-a"))


def _rfc3339(text: str) -> float:
    from datetime import datetime
    head, _, rest = text.partition(".")
    digits = re.match(r"\d+", rest).group(0)
    return datetime.fromisoformat(head + rest[len(digits):]).timestamp() + \
        float("0." + digits)


# -- the rules, on the real spec ------------------------------------------------------------------
def H(i, src, dst, trigger, t, job=(None, None, None)):  # noqa: N802 (a history row, short)
    return HistoryRow(i, 1, src, dst, trigger, t, None, *job)


FLOW = [H(1, None, "detected", "detect", 100.0), H(2, "detected", "stable", "stabilize", 105.0),
        H(3, "stable", "queued", "enqueue", 105.5), H(4, "queued", "gpu_locked", "lock_gpu", 110),
        H(5, "gpu_locked", "queued", "requeue", 112),  # its host went away during the upload
        H(6, "queued", "gpu_locked", "lock_gpu", 120), H(7, "gpu_locked", "uploaded", "upload", 124),
        H(8, "uploaded", "running", "submit", 125)]


def test_a_run_is_split_by_the_specs_flags_and_a_requeue_counts_in_both():
    ended = [*FLOW, H(9, "running", "success", "complete", 200)]
    d = durations.phases(SPEC, ended, JobTimes(130, 190, "queue"), now=10_000)
    assert d == {"quiet": 5, "slot_wait": 0.5 + 4.5 + 8, "upload": 2 + 4, "queue_wait": 6,
                 "run": 60, "results": 10, "total": 100}
    # in progress: the phase it is in counts up to now; the ones to come are None
    going = durations.phases(SPEC, FLOW, JobTimes(130, None, "queue"), now=150)
    assert going["run"] == 20 and going["results"] is None and going["total"] == 50
    waiting = durations.phases(SPEC, FLOW, JobTimes(), now=150)
    assert waiting["queue_wait"] == 26 and waiting["run"] is None


def test_a_job_that_never_started_waited_and_an_unknown_one_is_not_guessed():
    cancelled = [*FLOW, H(9, "running", "failure", "cancel", 200)]
    d = durations.phases(SPEC, cancelled, JobTimes(None, 190, "queue"), now=10_000)
    assert d["queue_wait"] == 66 and d["run"] is None and d["results"] == 10
    old = durations.phases(SPEC, cancelled, JobTimes(None, 190, "unknown"), now=10_000)
    assert old["queue_wait"] is None and old["run"] is None and old["results"] is None
    assert old["total"] == 100 and old["upload"] == 6
    early = [*FLOW[:4], H(5, "gpu_locked", "failure", "fail", 111)]  # the upload failed
    d = durations.phases(SPEC, early, JobTimes(), now=10_000)
    assert d["upload"] == 1 and d["queue_wait"] is None and d["total"] == 11


def test_runs_begin_at_detection_and_at_each_retry():
    history = [*FLOW, H(9, "running", "failure", "fail", 200),
               H(10, "failure", "stable", "retry", 300), H(11, "stable", "queued", "enqueue", 301)]
    assert [[h.id for h in r] for r in durations.runs(SPEC, history)] == \
        [list(range(1, 10)), [10, 11]]


def test_a_queue_time_outside_what_caseflow_saw_is_not_taken(caplog):
    kept = JobTimes(None, None, None)
    saw = JobStatus(SUCCESS, "exit code 0", 0, started=1000.5, ended=1040.0)
    assert durations.on_end(7, kept, saw, 1050.0, lambda: 1001.0) == \
        JobTimes(1001.0, 1040.0, "queue")  # 0.5 s early: whole seconds, moved inside
    with caplog.at_level(logging.WARNING, logger="caseflow.engine"):
        # the host's clock is 50 minutes ahead: neither of its times is taken
        skewed = JobStatus(SUCCESS, "exit code 0", 0, started=4010.0, ended=4048.0)
        kept = JobTimes(1010.0, None, "observed")
        assert durations.on_end(7, kept, skewed, 1050.0, lambda: 1001.0) == \
            JobTimes(1010.0, 1050.0, "observed")
    assert "case 7: the queue says its job started 2960 s from now" in caplog.text
    assert "case 7: the queue says its job ended 2998 s from now" in caplog.text
    # a poll that sees it run: the queue's start, else the first poll that saw it (once)
    running = JobStatus(RUNNING, "running")
    assert durations.on_running(7, JobTimes(), running, 1020.0, lambda: 1001.0) == \
        JobTimes(1020.0, None, "observed")
    assert durations.on_running(7, JobTimes(1020.0, None, "observed"), running, 1030.0,
                                lambda: 1001.0) is None
    said = JobStatus(RUNNING, "running", started=1015.0)
    assert durations.on_running(7, JobTimes(1020.0, None, "observed"), said, 1030.0,
                                lambda: 1001.0) == JobTimes(1015.0, None, "queue")
    waits = JobStatus(RUNNING, "queued", waiting=True)
    assert durations.on_running(7, JobTimes(), waits, 1030.0, lambda: 1001.0) is None
    assert durations.on_running(7, JobTimes(None, None, "unknown"), running, 1030.0,
                                lambda: 1001.0) is None  # a job of an older caseflow


# -- what the queues say of when a job ran: their real answers, captured (tests/data/) -------------
DATA = Path(__file__).resolve().parent / "data"


def utc(*parts, zone_hours: float = 0) -> float:
    """A moment given as the host's local time at `zone_hours` from UTC."""
    return datetime(*parts, tzinfo=timezone(timedelta(hours=zone_hours))).timestamp()


def test_slurm_start_and_end_from_squeue_and_sacct():
    """Slurm 22.05's own answer to the poll (tests/data/slurm/capture.py), times as Unix time
    (SLURM_TIME_FORMAT=%s): sacct's Start and End for a job squeue forgot, squeue's StartTime
    and EndTime for one it lists as ended, StartTime of a running one; a pending one waits."""
    from caseflow.backends.slurm import SlurmBackend
    from caseflow.backends.slurm_status import Poll
    captured = json.loads((DATA / "slurm" / "jobs.json").read_text())
    refs = [JobRef(n, jid, name, f"/jobs/{name}")
            for n, (name, jid) in enumerate(captured["ids"].items())]
    poll = Poll((DATA / "slurm" / "poll-times.txt").read_text(), refs)
    got = {r.label: SlurmBackend(None).job_status(poll, r) for r in refs}
    assert (got["forgotten"].outcome, got["forgotten"].started, got["forgotten"].ended) == \
        (SUCCESS, 1796696838, 1796696839)
    assert (got["ended"].outcome, got["ended"].started, got["ended"].ended) == \
        (SUCCESS, 1796696848, 1796696849)
    assert got["running"].outcome == RUNNING and not got["running"].waiting
    assert (got["running"].started, got["running"].ended) == (1796696850, None)
    assert got["waiting"].outcome == RUNNING and got["waiting"].waiting
    assert got["waiting"].started is None
    low, high = captured["moments"]["before"], captured["moments"]["after"]
    for status in got.values():
        for t in (status.started, status.ended):
            assert t is None or low - 1 <= t <= high, (status, low, high)
    # sacct's own times in the cluster's zone (UTC there) are the same moments
    assert [line.split("|")[1] for line in captured["sacct_local_times"]] == \
        [datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
         for t in (1796696838, 1796696848)]


def test_grid_engine_start_and_end_in_the_hosts_zone():
    """Grid Engine 8.1.9's answers (tests/data/gridengine/) print local times without an
    offset: qstat's JAT_start_time, qacct's start_time and end_time ("-/-" for a job that
    never started). The poll says the host's offset (`date +%z`); without it no time is read."""
    from caseflow.backends.gridengine_status import (Poll, accounted_outcome, parse_qacct,
                                                     parse_qstat, queued_outcome)
    jobs, _ = parse_qstat((DATA / "gridengine" / "qstat-states.xml").read_text())
    plus_one = zone_offset("+0100")
    running = queued_outcome(jobs["3"], zone=plus_one)
    assert not running.waiting and running.started == utc(2026, 12, 7, 17, 15, 19, zone_hours=1)
    assert queued_outcome(jobs["3"]).started is None  # no zone: not guessed
    assert queued_outcome(jobs["7"], zone=plus_one).waiting  # qw
    three = parse_qacct((DATA / "gridengine" / "qacct-exit-three.txt").read_text())[-1]
    ended = accounted_outcome("1", three, zone_offset("-0530"))
    assert (ended.started, ended.ended) == (utc(2026, 12, 7, 17, 15, 18, zone_hours=-5.5),) * 2
    qdel = parse_qacct((DATA / "gridengine" / "qacct-qdel-running.txt").read_text())[-1]
    killed = accounted_outcome("3", qdel, plus_one)
    assert killed.ended - killed.started == 3
    never = parse_qacct((DATA / "gridengine" / "qacct-eqw-deleted.txt").read_text())[-1]
    assert accounted_outcome("8", never, plus_one).started is None
    text = "@@caseflow zone +0100\n" + (DATA / "gridengine" / "poll.txt").read_text()
    refs = [JobRef(0, "3", "runs", "/jobs/3"), JobRef(1, "2", "no-such-folder", "/jobs/2"),
            JobRef(2, "1", "exits-three", "/jobs/1")]
    poll = Poll(text, refs)
    assert poll.zone == plus_one
    assert queued_outcome(poll.queued["3"], zone=poll.zone).started == running.started


def test_pueue_start_and_end_in_both_encodings():
    """pueue's own state files (tests/data/pueue/): 3.x keeps start and end in the task, 4.x
    in the body of its status; Queued and Stashed tasks wait."""
    from caseflow.backends.pueue_status import task_outcome
    v4 = json.loads((DATA / "pueue" / "v4.0.0_state.json").read_text())["tasks"]
    done = task_outcome(v4["0"])
    assert done.started == pytest.approx(utc(2024, 7, 18, 14, 55, 2, 890447, zone_hours=2))
    assert done.ended == pytest.approx(utc(2024, 7, 18, 14, 55, 3, 191922, zone_hours=2))
    failed = task_outcome(v4["1"])
    assert failed.exit_code == 2 and failed.ended - failed.started == pytest.approx(0.30162, abs=1e-5)
    running = task_outcome(v4["3"])
    assert running.started == pytest.approx(utc(2024, 7, 18, 14, 55, 23, 365190, zone_hours=2))
    assert running.ended is None and not running.waiting
    assert task_outcome(v4["4"]).waiting and task_outcome(v4["2"]).waiting  # Queued, Stashed
    assert task_outcome(v4["4"]).started is None
    v2 = json.loads((DATA / "pueue" / "v2.0.0_state.json").read_text())["tasks"]
    old = task_outcome(v2["0"])
    assert old.started == pytest.approx(utc(2022, 5, 9, 18, 41, 29, 273563, zone_hours=2))
    assert old.ended == pytest.approx(utc(2022, 5, 9, 18, 41, 29, 473998, zone_hours=2))
    assert task_outcome(v2["2"]).waiting and task_outcome(v2["2"]).started is None


def test_a_job_that_writes_its_own_bookkeeping_harms_no_case(ws):
    """A job runs in its case folder and can write caseflow's files there: a start time
    with a space in it, or with carriage returns that look like other jobs' lines, leaves
    its own case readable (its times as caseflow saw them) and every other case of the same
    poll untouched (one never ended and kept its slot, the other failed its neighbours: a
    review). All four end in success."""
    job = (
        'if [ -e evil-space ]; then printf "1765127718 0" > .caseflow/started; fi; '
        'if [ -e evil-cr ]; then printf "1\\r0 x\\r1 x\\r2 x\\r3 x" > .caseflow/started; fi; '
        f'while [ ! -e "{ws.ctl}/go" ]; do sleep 0.05; done'
    )
    ws.write_config(groups={"gpu_a": {"slots": 4}}, backend={"kind": "direct", "command": job})
    ws.start()
    names = ["evil-space", "evil-cr", "victim1", "victim2"]
    for name in names:
        ws.drop_case(name, files={name: "x"})
    for name in names:
        ws.wait_state(name, "running")
    wait_for(lambda: all((ws.remote_folder(n) / ".caseflow" / "started").read_bytes()[:1] == b"1"
                         for n in names[:2]), what="the jobs to write their started files")
    (ws.ctl / "go").touch()
    for name in names:
        row = ws.wait_state(name, "success")
        assert row.exit_code == 0 and row.slot_index is None, row
    shown_evil = json.loads(ws.cli("show", "evil-cr", "--json", check=True).stdout)
    assert all(v is None or v >= 0 for v in shown_evil["durations"].values())
