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
import time

import pytest

from caseflow import durations
from caseflow.backends import RUNNING, SUCCESS, JobStatus
from caseflow.spec import load_spec
from caseflow.store import HistoryRow, JobTimes
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
    assert row.job_times == "queue"  # pueue says when it started the task, while it runs
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
