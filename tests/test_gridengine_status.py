"""The Grid Engine backend's parsers on real answers of Grid Engine 8.1.9, kept as text in
tests/data/gridengine/ (written by capture.py there); and the job script's way of reading its
arguments back, with the system's own sh. No Grid Engine needed: tests/gridengine/ checks the
same against the running queue."""

import subprocess
from pathlib import Path

import pytest

from caseflow.backends import FAILURE, NOT_FOUND, RUNNING, SUCCESS, UNREADABLE, JobRef
from caseflow.backends.gridengine import JOB_WRAPPER, GridEngineBackend, job_arg
from caseflow.backends.gridengine_status import (
    NO_RECORD,
    Poll,
    Queued,
    accounted_outcome,
    error_reasons,
    parse_qacct,
    parse_qstat,
    queued_outcome,
)
from caseflow.backends.output import BadOutput

DATA = Path(__file__).parent / "data" / "gridengine"


def data(name: str) -> str:
    return (DATA / name).read_text()


def only_record(name: str) -> dict:
    records = parse_qacct(data(name))
    assert len(records) == 1
    return records[0]


# -- qstat -xml -------------------------------------------------------------------------------
def test_qstat_lists_running_pending_held_and_failing_jobs():
    jobs, unreadable = parse_qstat(data("qstat-states.xml"))
    assert not unreadable
    assert {j: (q.name, q.state, q.slots) for j, q in jobs.items() if j != "5"} == {
        "3": ("runs", "r", "1"), "4": ("runs-on-two-slots", "r", "2"), "7": ("waits", "qw", "4"),
        "2": ("epilog-fails", "qw", "1"), "8": ("no-such-folder", "Eqw", "1"),
        "6": ("held", "hqw", "1")}
    assert jobs["3"].queue == "all.q@vm" and jobs["7"].queue == ""
    # 8.1.9 writes a "<" in a job name as "%lt;" (a bug of its XML writer); the entry still
    # reads, and caseflow's own names never hold one
    assert jobs["5"].name == "odd&%lt;name>'\"" and jobs["5"].state == "hqw"


def test_each_state_of_a_listed_job_is_running_with_what_a_person_reads():
    jobs, _ = parse_qstat(data("qstat-states.xml"))
    details = {j: queued_outcome(q) for j, q in jobs.items()}
    assert {s.outcome for s in details.values()} == {RUNNING}
    assert details["3"].detail == "r on all.q@vm"
    assert details["4"].detail == "r on all.q@vm, 2 slots"
    assert details["7"].detail == "qw: waiting in the queue"
    assert details["6"].detail == "hqw: held, it waits for qrls 6"
    deleting, _ = parse_qstat(data("qstat-deleting.xml"))
    assert queued_outcome(deleting["3"]).detail == "dr: being deleted"


def test_a_job_in_error_state_says_why_and_what_a_person_must_do():
    jobs, _ = parse_qstat(data("qstat-states.xml"))
    reasons = error_reasons([ln for ln in data("qstat-j-eqw.txt").splitlines()
                             if ln.startswith("error reason")])
    assert reasons == ["error: can't chdir to /nonexistent/folder: No such file or directory"]
    status = queued_outcome(jobs["8"], reasons)
    assert status.outcome == RUNNING
    assert "Eqw: in ERROR" in status.detail and "qmod -cj 8" in status.detail
    assert "qdel 8" in status.detail and "can't chdir to /nonexistent/folder" in status.detail
    assert "no reason" in queued_outcome(jobs["8"]).detail


def test_an_empty_queue_and_what_is_not_qstats_xml():
    assert parse_qstat(data("qstat-empty.xml")) == ({}, [])
    for text in (data("qstat-qmaster-down.txt"), "", "<job_info><queue_info>"):
        with pytest.raises(BadOutput):
            parse_qstat(text)
    with pytest.raises(BadOutput, match="not <job_info>"):
        parse_qstat("<html/>")


def test_an_entry_without_a_job_number_is_set_aside_and_an_unknown_state_is_unreadable():
    text = data("qstat-states.xml").replace("<JB_job_number>3</JB_job_number>", "")
    jobs, unreadable = parse_qstat(text)
    assert "3" not in jobs and len(jobs) == 6 and len(unreadable) == 1
    assert "<JB_name>runs</JB_name>" in unreadable[0]
    with pytest.raises(BadOutput, match="state caseflow does not know: 'Zr'"):
        queued_outcome(Queued("3", "runs", "Zr", "all.q@vm", "1"))
    with pytest.raises(BadOutput):
        queued_outcome(Queued("3", "runs", "", "", ""))


# -- qacct -j ---------------------------------------------------------------------------------
def test_an_exit_code_in_the_accounting_record():
    record = only_record("qacct-exit-three.txt")
    assert (record["jobname"], record["jobnumber"], record["failed"]) == ("exits-three", "1", "0")
    status = accounted_outcome("1", record)
    assert (status.outcome, status.exit_code) == (FAILURE, 3)
    assert status.detail == "grid engine job 1 ended, exit code 3"
    ok = accounted_outcome("1", dict(record, exit_status="0"))
    assert (ok.outcome, ok.exit_code) == (SUCCESS, 0)


def test_failed_in_the_record_is_a_failure_whatever_the_exit_status():
    killed = accounted_outcome("3", only_record("qacct-qdel-running.txt"))
    assert killed.outcome == FAILURE and killed.exit_code is None
    assert killed.detail == ("grid engine job 3 failed (100: assumedly after job), "
                             "exit status 137")
    epilog = only_record("qacct-epilog-failed.txt")
    assert epilog["exit_status"] == "0"
    status = accounted_outcome("2", epilog)
    assert status.outcome == FAILURE and "15: in epilog" in status.detail
    never_started = accounted_outcome("8", only_record("qacct-eqw-deleted.txt"))
    assert never_started.outcome == FAILURE
    assert "28: changing into working directory" in never_started.detail


def test_no_record_and_a_record_that_cannot_be_read():
    for name in ("qacct-pending-deleted.txt", "qacct-no-accounting-file.txt"):
        assert NO_RECORD.search(data(name)), name
        assert parse_qacct(data(name)) == []
    with pytest.raises(BadOutput, match="failed/exit_status"):
        accounted_outcome("1", {"failed": "many", "exit_status": "3"})
    with pytest.raises(BadOutput):
        accounted_outcome("1", {"failed": "0"})


# -- the poll script's answer, judged job by job ----------------------------------------------
def test_the_poll_answer_job_by_job():
    """poll.txt is the poll script's answer for: a running job, one in Eqw, one that ended
    (exit 3; its exit code file and its record) and an id Grid Engine never had."""
    refs = [JobRef(1, "3", "runs", "/r/1"), JobRef(2, "8", "no-such-folder", "/r/2"),
            JobRef(3, "1", "exits-three", "/r/3"), JobRef(4, "99999", "caseflow-x-4-1", "/r/4")]
    poll = Poll(data("poll.txt"), refs)
    assert poll.qstat_rc == 0 and poll.exits == {2: "1 3"}
    assert set(poll.qacct) == {2, 3} and poll.qacct[3][0] == 1
    assert poll.reasons == {1: ["error: can't chdir to /nonexistent/folder: "
                                "No such file or directory"]}
    now = [1000.0]
    backend = GridEngineBackend(transport=None, clock=lambda: now[0])
    assert backend.accounting_wait == 60  # the default
    status = {r.case_id: backend.job_status(poll, r) for r in refs}
    assert status[1].outcome == RUNNING and status[1].detail == "r on all.q@vm"
    assert status[2].outcome == RUNNING and "can't chdir" in status[2].detail
    assert (status[3].outcome, status[3].exit_code) == (FAILURE, 3)
    # gone from qstat without a record: the record may still come (accounting_flush_time)
    assert status[4].outcome == RUNNING and "waiting for Grid Engine's accounting" in \
        status[4].detail
    # the id is listed under another job's name: not this case's job
    other = backend.job_status(poll, JobRef(1, "3", "caseflow-x-1-1", "/r/1"))
    assert other.outcome == NOT_FOUND and "not this case's" in other.detail
    # the record is another job's (an id used again): waited for, then the exit code file
    again = JobRef(3, "1", "caseflow-x-3-1", "/r/3")
    assert backend.job_status(poll, again).outcome == RUNNING
    now[0] += 59
    assert backend.job_status(poll, again).outcome == RUNNING
    assert backend.job_status(poll, refs[3]).outcome == RUNNING
    now[0] += 1
    again_status = backend.job_status(poll, again)
    assert (again_status.outcome, again_status.exit_code) == (FAILURE, 3)
    assert "exit code file" in again_status.detail
    gone = backend.job_status(poll, refs[3])
    assert gone.outcome == NOT_FOUND and "99999" in gone.detail
    assert backend.unaccounted == {}
    backend.polled(refs, poll)
    assert "(Eqw: 8)" in backend.notice() and "HELD" not in backend.notice()


def test_a_poll_cut_short_or_without_qstat_is_unreadable_as_a_whole():
    text = data("poll.txt")
    with pytest.raises(BadOutput, match="incomplete"):
        Poll(text[: len(text) // 2], [])
    with pytest.raises(BadOutput, match="no qstat section"):
        Poll("@@caseflow end\n", [])
    refs = [JobRef(1, "3", "runs", "/r/1")]
    with pytest.raises(BadOutput):
        Poll(text.replace("</job_info>\n@@caseflow reason", "\n@@caseflow reason"), refs)
    spoiled = Poll(text.replace("@@caseflow qacct 2 0", "@@caseflow qacct 2 x"), refs)
    assert 2 not in spoiled.qacct


def test_a_job_the_script_saw_listed_but_the_parser_did_not_is_unreadable():
    refs = [JobRef(1, "3", "runs", "/r/1"), JobRef(2, "99999", "caseflow-x-4-1", "/r/4")]
    text = data("poll.txt").replace("<JB_job_number>3</JB_job_number>", "")
    poll = Poll(text, refs)
    backend = GridEngineBackend(transport=None, clock=lambda: 0.0)
    backend.accounting_wait = 0
    with pytest.raises(BadOutput, match="qstat lists job 3 in a form"):
        backend.job_status(poll, refs[0])
    # and an id no longer listed, without record or exit file, may be the unreadable entry
    fake = Poll(text.replace("@@caseflow qacct 3 1", "@@caseflow qacct 1 1"), refs)
    assert backend.job_status(fake, refs[1]).outcome == UNREADABLE


# -- the job's arguments --------------------------------------------------------------------
ARGS = ["env", "NAME=it's $(touch CANARY) `x`; a,b,c=d\nsecond line %j \\ \"q\" -x",
        "TRAILING=ends with a newline\n", "BACKSLASHES=\\0012 \\n \\\\ \\c %b %s", "EMPTY=",
        "", "\n", "\\", "-n", "tab\there"]


@pytest.mark.parametrize("shell", ["sh", "bash", "dash"])
def test_the_job_script_reads_its_arguments_back_exactly(tmp_path, shell):
    """The wrapper's first lines turn job_arg's escapes back, byte for byte (a newline is all
    Grid Engine loses; tests/gridengine/ runs it through the real queue)."""
    decode = JOB_WRAPPER.split("mkdir -p .caseflow")[0]
    dump = decode + 'for a in "$@"; do printf "%s\\0" "$a"; done\n'
    encoded = [job_arg(a) for a in ARGS]
    assert not any("\n" in a for a in encoded)
    res = subprocess.run([shell, "-c", dump, "wrapper", *encoded], capture_output=True,
                         check=True)
    assert res.stdout.decode().split("\0")[:-1] == ARGS
