"""`caseflow status --watch` in a real pseudo-terminal: the table redrawn in place every
second with the counts per state on top, following a case, until Ctrl-C."""

from __future__ import annotations

import io
import os
import re
import signal
import sys

import pexpect

from harness import DEADLINE

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def spawn(ws, *args: str, rows: int = 30, cols: int = 160) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    # Ctrl-C as at a terminal, however the test run was started: a shell without job control
    # starts its background commands with SIGINT ignored, and Python then never raises
    # KeyboardInterrupt (a suite started as `(make test &)` failed these tests so)
    child = pexpect.spawn(sys.executable, ["-m", "caseflow.cli", "status", *args, "-c",
                                           str(ws.config_path)], env={**env, "TERM": "xterm"},
                          dimensions=(rows, cols), encoding="utf-8", timeout=DEADLINE,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    child.logfile_read = io.StringIO()  # everything it drew
    return child


def frames(text: str) -> list[str]:
    """The screens drawn, each from the cursor's return to the top left."""
    return [ANSI.sub("", f) for f in text.split("\x1b[H")[1:]]


def test_watch_redraws_in_place_until_ctrl_c(ws):
    ws.start()
    ws.drop_case("watched", hold="go")
    ws.wait_state("watched", "running")
    child = spawn(ws, "--watch")
    try:
        child.expect(r"running 1")
        child.expect(r"watched\s+running\s+gpu_a")
        ws.release("go")
        ws.wait_state("watched", "success")
        child.expect(r"success 1")
        child.expect(r"watched\s+success")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)
    seen = child.logfile_read.getvalue()
    drawn = frames(seen)
    assert len(drawn) >= 2  # redrawn: the cursor went back to the top, not down the screen
    last = drawn[-1].splitlines()
    assert last[0].startswith("caseflow status at ") and "1 case;" in last[0]
    # the states with cases, and the ends always
    assert re.match(r"success 1\s+failure 0\s+not_found 0\s*$", last[1]), last[1]
    assert "\x1b[K" in seen and "\x1b[J" in seen  # each line's rest and the screen below erased


def test_watch_fits_the_terminal_and_shows_active_cases_first(ws):
    from webtools import fill_cases
    ws.start()
    fill_cases(ws.database, 200)
    ws.drop_case("still-going", hold="late")
    ws.wait_state("still-going", "running")
    child = spawn(ws, "--watch", rows=12, cols=100)
    try:
        child.expect(r"\.\.\. and \d+ more")
        screen = frames(child.logfile_read.getvalue())[-1].splitlines()
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
        ws.release("late")
    assert len(screen) <= 12 and all(len(line) <= 100 for line in screen)
    table = [line for line in screen if re.match(r"\d+\s", line)]
    assert "still-going" in table[0]  # the active case before 200 ended ones
    more = re.fullmatch(r"\.\.\. and (\d+) more .*", screen[-1])
    assert more and int(more.group(1)) + len(table) == 201, screen
    assert child.exitstatus == 0


def test_the_counts_fit_80_columns_and_always_show_the_ends():
    from collections import Counter

    from caseflow.cli.status_watch import count_lines
    from caseflow.spec import load_spec
    spec = load_spec()
    busy = Counter({name: 12345 for name in spec.state_names})
    lines = count_lines(spec, busy, 80)
    assert len(lines) > 1 and all(len(line) <= 80 for line in lines), lines
    shown = " ".join(lines).split()
    assert [shown[i] for i in range(0, len(shown), 2)] == list(spec.state_names)  # all, in order
    assert count_lines(spec, Counter({"running": 2}), 80) == [
        "running 2  success 0  failure 0  not_found 0"]


def test_watch_with_json_is_a_usage_error(ws):
    ws.start()
    proc = ws.cli("status", "--watch", "--json")
    assert proc.returncode == 2 and "--watch" in proc.stderr


def test_watch_of_one_state(ws):
    ws.start()
    ws.drop_case("only")
    ws.wait_state("only", "success")
    child = spawn(ws, "--watch", "--state", "success")
    try:
        child.expect(r"\(showing success\)")
        child.expect(r"only\s+success")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
