"""The command line as an operator uses it, against real daemons and a real database."""

import json
import os
from pathlib import Path

from harness import wait_for

ODD_NAMES = ["with space", "it's \"quoted\"", "$(touch CANARY)", "`touch CANARY`",
             "semi;colon|pipe", "-leading-dash", "ünïcödé ✓", "tab\there"]


def test_status_show_and_resources(ws):
    ws.start()
    ws.drop_case("one")
    ws.drop_case("two", exit_code=4)
    ws.wait_state("one", "success")
    ws.wait_state("two", "failure")
    status = ws.cli("status", check=True).stdout
    assert "one" in status and "success" in status and "job exited with code 4" in status
    only = json.loads(ws.cli("status", "--json", "--state", "failure", check=True).stdout)
    assert [c["name"] for c in only] == ["two"]
    show = json.loads(ws.cli("show", "two", "--json", check=True).stdout)
    assert show["reason"] == "job exited with code 4"
    assert [h["trigger"] for h in show["history"]][-1] == "fail"
    text = ws.cli("show", str(show["id"]), check=True).stdout
    assert "history:" in text and "lock_gpu" in text
    res = json.loads(ws.cli("resources", "--json", check=True).stdout)
    assert [(r["group"], r["slot"], r["device"], r["case_id"]) for r in res] == [
        ("gpu_a", 0, "0", None), ("gpu_a", 1, "1", None), ("gpu_b", 0, None, None)]


def test_unknown_and_ambiguous_cases(ws):
    ws.start()
    ws.drop_case("twin")
    ws.wait_state("twin", "success")
    os.rename(ws.inbox / "twin", ws.root / "twin-old")
    ws.drop_case("twin")  # same name, new folder: a new case
    wait_for(lambda: len(ws.cases("twin")) == 2 and ws.cases("twin")[1].state == "success")
    proc = ws.cli("show", "twin")
    assert proc.returncode == 1 and "names 2 cases" in proc.stderr
    proc = ws.cli("show", "nobody")
    assert proc.returncode == 1 and "no case" in proc.stderr


def test_retry_and_cancel_without_a_daemon_apply_at_once(ws):
    ws.start()
    ws.drop_case("again", exit_code=2)
    ws.wait_state("again", "failure")
    ws.drop_case("stuck", hold="never")
    ws.wait_state("stuck", "running")
    ws.stop()
    (ws.inbox / "again" / "exit_code").unlink()
    proc = ws.cli("retry", "again")
    assert proc.returncode == 0, proc.stderr
    assert "failure -> stable" in proc.stdout
    proc = ws.cli("cancel", "stuck")
    assert proc.returncode == 0, proc.stderr
    row = ws.case("stuck")
    assert (row.state, row.reason, row.slot_index) == ("failure", "cancelled", None)
    pid = int(row.task_id)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or
             Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
             what="the cancelled job to end")
    ws.start()
    ws.wait_state("again", "success")
    assert ws.case("again").run == 2


def test_requests_through_a_running_daemon(ws):
    ws.start()
    ws.drop_case("stop-me", hold="never")
    ws.wait_state("stop-me", "running")
    proc = ws.cli("cancel", "stop-me")
    assert proc.returncode == 0, proc.stderr
    assert "requested" in proc.stdout and "running -> failure" in proc.stdout
    proc = ws.cli("retry", "stop-me", "--no-wait")
    assert proc.returncode == 0
    ws.wait_state("stop-me", "running")
    proc = ws.cli("retry", "stop-me")
    assert proc.returncode == 1 and "retry applies to: failure, not_found" in proc.stderr


def test_odd_case_names_flow_safely(ws, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    ws.start()
    for name in ODD_NAMES:
        ws.drop_case(name)
    for name in ODD_NAMES:
        row = ws.wait_state(name, "success")
        env = (Path(row.remote_path) / "job_env.txt").read_text()
        assert f"CASEFLOW_CASE_NAME={name}" in env
    assert list(tmp_path.rglob("CANARY")) == []
    assert not Path("CANARY").exists()
    out = json.loads(ws.cli("status", "--json", check=True).stdout)
    assert sorted(c["name"] for c in out) == sorted(ODD_NAMES)
    # like every command line tool: `--` ends the options
    show = ws.cli("show", "-c", str(ws.config_path), "--", "-leading-dash", check=True)
    assert "-leading-dash" in show.stdout
    assert "tab\\there" in ws.cli("status", check=True).stdout  # escaped, one line per case


def test_diagram_formats(ws, tmp_path):
    out = ws.cli("diagram", check=True).stdout
    assert out.startswith("---") and "stateDiagram-v2" in out
    target = tmp_path / "m.svg"
    ws.cli("diagram", "--format", "svg", "-o", str(target), check=True)
    assert b"<svg" in target.read_bytes()
    assert "digraph" in ws.cli("diagram", "--format", "dot", check=True).stdout


# -- the command line without rough edges ------------------------------------------------------
import re
import signal
import subprocess
import sys
import threading

import pytest
import yaml

from harness import DEADLINE

COMMANDS = ["run", "status", "show", "resources", "retry", "cancel", "check", "diagram", "init",
            "files", "help"]


def test_the_config_option_before_the_command(ws):
    ws.start()
    ws.drop_case("early")
    ws.wait_state("early", "success")
    proc = ws.cli("-c", str(ws.config_path), "status", "--json", check=True)
    assert [c["name"] for c in json.loads(proc.stdout)] == ["early"]
    proc = ws.cli("--config", str(ws.config_path), "show", "early", check=True)
    assert "history:" in proc.stdout


def test_every_command_says_in_one_line_what_it_does(ws):
    top = ws.cli("--help", check=True).stdout
    for name in COMMANDS:
        assert re.search(rf"^    {name} +\S", top, re.M), f"{name} has no help line"
        text = ws.cli(name, "--help", check=True).stdout
        description = text.split("\n\n")[1]
        assert "\n" not in description.strip() or len(description) < 160, description
        assert description.strip().endswith("."), description
        if "--json" in text:
            help_text = " ".join(text.split("--json", 2)[2].split())
            assert help_text.startswith("print ") and "JSON" in help_text, (name, help_text)


def test_retry_and_cancel_through_a_daemon_say_what_happened(ws):
    ws.start()
    ws.drop_case("again", exit_code=2)
    ws.wait_state("again", "failure")
    (ws.inbox / "again" / "exit_code").unlink()
    proc = ws.cli("retry", "again")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.splitlines()[-1]
    assert re.fullmatch(r"case \d+ again: retry accepted \(run 2\): failure -> stable; it is now "
                        r"\w+ and goes on in the running daemon \(pid \d+\); follow it with "
                        r"`caseflow show \d+`", line), line
    ws.wait_state("again", "success")
    ws.drop_case("halt", hold="never")
    ws.wait_state("halt", "running")
    proc = ws.cli("cancel", "halt")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^case \d+ halt: cancelled: running -> failure \(cancelled\)$",
                     proc.stdout, re.M), proc.stdout


def test_a_request_that_cannot_be_applied_yet_says_so(ws):
    ws.start()
    ws.drop_case("slowpoke", hold="never")
    ws.wait_state("slowpoke", "running")
    proc = ws.cli("cancel", "slowpoke", "--wait", "0")
    assert proc.returncode in (0, 1)
    if proc.returncode == 1:
        assert "it stays requested" in proc.stderr
    ws.wait_state("slowpoke", "failure")


def test_a_multi_line_reason_is_one_line_in_status_and_whole_in_show(ws):
    ws.start()
    ws.drop_case("badyaml", files={"data.bin": b"x", "case.yaml": "group: [gpu_a\npriority: 1\n"})
    row = ws.wait_state("badyaml", "failure")
    assert "\n" in row.reason and "not valid YAML" in row.reason
    table = ws.cli("status", check=True).stdout.splitlines()
    assert len(table) == 2, table  # the header and the case
    assert "not valid YAML" in table[1] and len(table[1]) < 300
    show = ws.cli("show", "badyaml", check=True).stdout
    for part in row.reason.splitlines():
        assert part.strip() in show, part


def test_diagram_into_a_missing_folder_is_a_one_line_error(ws, tmp_path):
    proc = ws.cli("diagram", "-o", str(tmp_path / "no" / "such" / "m.mmd"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"caseflow: -o {tmp_path / 'no' / 'such' / 'm.mmd'}: folder {tmp_path / 'no' / 'such'} "
        "does not exist"]


def _mistakes(ws, tmp_path):
    """(arguments, expected exit code, words in the message) of ordinary mistakes."""
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just some bytes" * 100)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({**ws.settings, "inbox": str(ws.inbox),
                                      "database": str(garbage),
                                      "transport": {"kind": "local", "root": str(ws.remote)}}))
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    (tmp_path / "empty.yaml").write_text("")
    c = ["-c", str(ws.config_path)]
    out = [(["-c", str(tmp_path / "none.yaml"), cmd], 2, "cannot read") for cmd in
           ("status", "run", "check")]
    out += [(["-c", str(tmp_path), "status"], 2, "cannot read"),
            (["-c", str(binary), "status"], 2, "UTF-8"),
            (["-c", str(tmp_path / "empty.yaml"), "status"], 2, "expected a mapping")]
    out += [(["-c", str(broken), *args], 1, "cannot use the database") for args in
            (["status"], ["show", "x"], ["resources"], ["retry", "x"], ["cancel", "x"], ["run"])]
    out += [([*c, "show", name], 1, "no case") for name in ("", "nobody", "99999", "-x", "a\nb")]
    out += [([*c, "retry", "nobody"], 1, "no case"), ([*c, "cancel", "nobody"], 1, "no case"),
            ([*c, "status", "--state", "sleeping"], 2, "unknown state"),
            (["diagram", "-o", str(tmp_path)], 2, "cannot write"),
            (["diagram", "-o", str(tmp_path / "x" / "y.mmd")], 2, "does not exist"),
            (["diagram", "--format", "png"], 2, "invalid choice"),
            (["init", str(tmp_path)], 2, "is a folder"),
            (["init", str(tmp_path / "no" / "c.yaml")], 2, "does not exist: make it first"),
            (["init", str(ws.config_path)], 2, "never overwrites"),
            (["init", "--example", "cloud", str(tmp_path / "c.yaml")], 2, "invalid choice"),
            (["files", "nothing.conf"], 1, "ships no file"),
            (["help", "everything"], 2, "no help topic"),
            ([*c, "retry", "--wait", "soon", "x"], 2, "invalid float"),
            (["frobnicate"], 2, "invalid choice")]
    return out


def test_ordinary_mistakes_get_one_line_and_no_traceback(ws, tmp_path):
    ws.start()
    ws.drop_case("present")
    ws.wait_state("present", "success")
    for args, code, words in _mistakes(ws, tmp_path):
        if args[-2:-1] == ["show"]:  # a name as the operator gives it, after --
            args = [*args[:-1], "--", args[-1]]
        proc = ws.cli(*args)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("caseflow: ") and words in last, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) <= 2, (args, proc.stderr)  # usage + error


# -- what the daemon shows and keeps ---------------------------------------------------------
def test_upload_progress_of_the_local_transport_in_status_and_show(ws):
    """A large local upload shows bytes, rate and time left while it runs (the upload is
    held at its first progress report so that the commands see it under way)."""
    ws.start()
    store = ws.daemon.engine.store
    reached, go = threading.Event(), threading.Event()
    original = store.set_progress

    def held(case_id, sent, total):
        original(case_id, sent, total)
        if sent < total:
            reached.set()
            go.wait(DEADLINE)
    store.set_progress = held
    size = 64 << 20
    try:
        ws.drop_case("big", files={"big.bin": b"\0" * size})
        assert reached.wait(DEADLINE), "no progress before the upload ended"
        line = next(l for l in ws.cli("status", check=True).stdout.splitlines() if " big " in l)
        assert re.search(r"gpu_locked \(\d+\.\d MB of 67\.1 MB \(\d+%\), [\d.]+ [KMG]?B/s, "
                         r"[\dminh ]+s? left\)", line), line
        show = ws.cli("show", "big", check=True).stdout
        assert re.search(r"^uploading: +\d+\.\d MB of 67\.1 MB", show, re.M), show
        data = json.loads(ws.cli("status", "--json", check=True).stdout)[0]
        assert 0 < data["progress_bytes"] < data["progress_total"] == size
    finally:
        go.set()
    ws.wait_state("big", "success")


def test_a_cancelled_jobs_log_is_brought_home_and_shown(ws):
    ws.start()
    ws.drop_case("cutoff", hold="never")
    row = ws.wait_state("cutoff", "running")
    job_log = Path(row.remote_path) / ".caseflow" / "job.log"
    wait_for(lambda: job_log.exists() and "started" in job_log.read_text(),
             what="the job to write its log")
    ws.cli("cancel", "cutoff", check=True)
    show = ws.cli("show", "cutoff", check=True).stdout
    assert "job log (" in show and f"job of case {row.id} started" in show, show
    assert json.loads(ws.cli("show", "--json", "cutoff", check=True).stdout)["job_log"]


def test_the_start_says_what_it_resumed(ws, caplog):
    ws.start()
    ws.drop_case("ongoing", hold="never")
    ws.drop_case("finished")
    ws.wait_state("ongoing", "running")
    done = ws.wait_state("finished", "success")
    ws.stop()
    with ws.store.transaction() as conn:  # a slot leaked by an ended case, freed at start
        conn.execute("UPDATE slots SET case_id = ? WHERE grp = 'gpu_b'", (done.id,))
    caplog.clear()
    ws.start()
    assert "resumed 1 active case(s): 1 running; 1 slot(s) reclaimed" in caplog.text
    assert (f"host local: local {ws.remote}, direct backend, groups gpu_a (2 slots), "
            "gpu_b (1 slot)") in caplog.text


def _transition_lines(ws, name):
    row = ws.case(name)
    return [(h.src, h.dst, h.trigger) for h in ws.store.history(row.id)], row


def test_one_log_line_per_transition_with_the_case_id_and_name(ws, caplog):
    ws.start()
    ws.drop_case("logged one")
    row = ws.wait_state("logged one", "success")
    # the line is logged right after the transition is committed: wait for it, not the row
    wait_for(lambda: f"case {row.id} 'logged one': running -> success" in caplog.text,
             what="the last transition's log line")
    history, row = _transition_lines(ws, "logged one")
    text = caplog.text
    for src, dst, trigger in history:
        if src is None:
            assert f"case {row.id} 'logged one': detected in the inbox" in text
        else:
            assert len(re.findall(rf"case {row.id} 'logged one': {src} -> {dst} \({trigger}\)",
                                  text)) == 1, (src, dst, trigger)


def test_json_logs_for_a_collector(ws):
    log_file = ws.root / "daemon.json.log"
    with open(log_file, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "caseflow.cli", "run", "-c",
                                 str(ws.config_path), "--log-format", "json"],
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        wait_for(lambda: "caseflow running" in log_file.read_text(), what="the daemon to run")
        ws.drop_case("as json")
        ws.wait_state("as json", "success")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    mine = [r for r in records if r.get("case_name") == "as json" and "to_state" in r]
    history, row = _transition_lines(ws, "as json")
    assert [r["to_state"] for r in mine] == [dst for _, dst, _ in history]
    assert [r.get("trigger") for r in mine] == [t for _, _, t in history]
    assert {r["case_id"] for r in mine} == {row.id}
    assert any(r["message"].startswith("resumed 0 active case(s)") for r in records)


def test_text_logs_are_one_line_per_event(ws):
    """A reason of several lines (PyYAML's) is one line of the log, like every event."""
    log_file = ws.root / "daemon.log"
    with open(log_file, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "caseflow.cli", "run", "-c",
                                 str(ws.config_path)], stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    try:
        wait_for(lambda: "caseflow running" in log_file.read_text(), what="the daemon to run")
        ws.drop_case("folded", files={"data.bin": b"x", "case.yaml": "group: [gpu_a\nx: 1\n"})
        row = ws.wait_state("folded", "failure")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0
    lines = log_file.read_text().splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")
    assert all(stamp.match(line) for line in lines), [l for l in lines if not stamp.match(l)]
    failed = [line for line in lines if f"case {row.id} 'folded': stable -> failure" in line]
    assert len(failed) == 1 and 'in "case.yaml", line 1, column 8' in failed[0], failed


# -- what caseflow ships: init, files, help (tests/test_service.py runs them installed) ------
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("example, source", [
    ("local", "local.yaml"), ("ssh-pueue", "config.yaml"), ("slurm", "slurm.yaml"),
    ("gridengine", "gridengine.yaml"), ("multi-host", "multi_host.yaml")])
def test_init_writes_the_example_once_and_makes_nothing_else(ws, tmp_path, example, source):
    """The starter is the shipped example, its folders beside the new file (`../inbox` of
    config/local.yaml: the clone's inbox, `./inbox` of the starter); a second init leaves it
    as it is; nothing else is made, not even the inbox `caseflow run` needs."""
    target = tmp_path / "starter" / "new" / "caseflow.yaml"
    target.parent.mkdir(parents=True)
    proc = ws.cli("init", str(target), "--example", example, check=True)
    expected = (ROOT / "config" / source).read_text().replace("../", "./")
    assert target.read_text() == expected
    assert f"wrote {target}: the example {example}" in proc.stdout
    inbox = yaml.safe_load(expected)["inbox"]
    inbox = (target.parent / inbox).resolve() if not inbox.startswith("/") else Path(inbox)
    assert f"mkdir -p {inbox}" in proc.stdout and f"caseflow -c {target} check" in proc.stdout
    made = tmp_path / "starter"
    assert sorted(str(p.relative_to(made)) for p in made.rglob("*")) == ["new",
                                                                       "new/caseflow.yaml"]
    target.write_text("# mine\n")
    proc = ws.cli("init", str(target), "--example", example)
    assert proc.returncode == 2 and "never overwrites" in proc.stderr
    assert target.read_text() == "# mine\n"


def test_the_local_starter_passes_check_and_runs_a_case(ws, tmp_path):
    """`caseflow init` with no --example, the inbox it names made as it says, then `check` and
    a case through `caseflow run` (a real process) with the starter as written."""
    folder = tmp_path / "mine"  # (the workspace's own config is in tmp_path)
    folder.mkdir()
    target = folder / "caseflow.yaml"
    proc = ws.cli("init", str(target), check=True)
    mkdir = next(line.split("#")[0].split() for line in proc.stdout.splitlines()
                 if line.strip().startswith("mkdir"))
    subprocess.run(mkdir, check=True)
    proc = ws.cli("-c", str(target), "check")
    assert proc.returncode == 0 and "all checks passed" in proc.stdout, proc.stdout + proc.stderr
    daemon = subprocess.Popen([sys.executable, "-m", "caseflow.cli", "-c", str(target), "run"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (folder / "inbox" / "first").mkdir()
        (folder / "inbox" / "first" / "data.txt").write_text("x")
        summary = folder / "results" / "first" / "output" / "summary.txt"
        wait_for(summary.exists, timeout=DEADLINE, what="the demo job's summary")
        assert "case: first" in summary.read_text()
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=DEADLINE) == 0


def test_files_lists_prints_and_locates_what_caseflow_ships(ws):
    listing = ws.cli("files", check=True).stdout
    for name in ("config/caseflow.service", "config/caseflow.logrotate",
                 "config/prometheus/caseflow-alerts.yml", "config/grafana/caseflow-dashboard.json",
                 "config/local.yaml", "config/slurm.yaml"):
        assert f"  {name} " in listing, listing
        printed = subprocess.run([sys.executable, "-m", "caseflow.cli", "files", name],
                                 capture_output=True, timeout=DEADLINE, check=True).stdout
        assert printed == (ROOT / name).read_bytes()
        assert ws.cli("files", "--path", name, check=True).stdout.strip() == str(ROOT / name)
    # its file name is enough when it is unique
    assert ws.cli("files", "caseflow.service", check=True).stdout == \
        (ROOT / "config" / "caseflow.service").read_text()


def test_help_lists_every_doc_and_prints_one(ws):
    listing = ws.cli("help", check=True).stdout
    for page in sorted((ROOT / "docs").glob("*.md")):
        title = page.read_text().splitlines()[0].lstrip("# ")
        assert re.search(rf"^  {re.escape(page.stem)} +{re.escape(title)}$", listing, re.M), \
            (page.stem, listing)
    assert ws.cli("help", "cli", check=True).stdout == (ROOT / "docs" / "cli.md").read_text()
    assert ws.cli("help", "service.md", check=True).stdout == \
        (ROOT / "docs" / "service.md").read_text()


def test_help_texts_point_to_the_installed_docs_not_to_a_clone(ws):
    """No --help names a file of the repository (docs/cli.md): an installed caseflow has none;
    they name `caseflow help TOPIC`, which prints the installed doc."""
    texts = [ws.cli("--help", check=True).stdout]
    texts += [ws.cli(name, "--help", check=True).stdout for name in COMMANDS]
    texts += [ws.cli("host", action, "--help", check=True).stdout for action in ("pause", "resume")]
    for text in texts:
        assert not re.search(r"\b(docs|config|specs)/", text), text
    assert "`caseflow help`" in texts[0] and "`caseflow help cli`" in texts[0]
    status = " ".join(ws.cli("status", "--help", check=True).stdout.split())
    assert "the keys `caseflow help cli` lists" in status
