"""The status page in a real browser: headless Chromium (Debian's package) driven by
Playwright, against the real daemon serving the real store.

A case copied into the inbox moves across the live diagram and the counts change without a
reload; the case page shows its history; hostile names show verbatim and run no script;
first paint with 10,000 cases is measured. A screenshot of each page goes into the test's
temporary folder (and into $CASEFLOW_SCREENSHOTS when set, which is how docs/ gets its
picture).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import time
import unicodedata
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from browser import browser_page, chromium, new_york_page  # noqa: F401,F811 (fixtures by name)
from caseflow import web
from caseflow.spec import load_spec
from caseflow.views import iso, printable
from caseflow.web.pages import local_time
from harness import DEADLINE, wait_for
from webtools import JULY, UNREACHABLE_TEXT, WEB, add_case, fill_cases, needs_a_person

pytestmark = pytest.mark.slow


def shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    extra = os.environ.get("CASEFLOW_SCREENSHOTS")
    if extra:
        shutil.copy(path, Path(extra) / f"status-{name}.png")
    return path


def counts(page) -> dict[str, int]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
        'svg.machine g.state')].map(g => [g.dataset.state,
        Number(g.querySelector('text.count').textContent)]))""")


@pytest.fixture
def site(ws):
    ws.write_config(web=WEB, stability={"quiet_seconds": 3, "rescan_seconds": 5})
    return ws, ws.start().web.url


def test_a_case_moves_across_the_live_diagram(site, browser_page, tmp_path):
    ws, url = site
    page = browser_page
    page.goto(url)
    page.evaluate("window.__sameDocument = 'yes'")  # gone if the page ever reloads
    assert counts(page)["success"] == 0
    ws.drop_case("flowing", hold="go")
    seen = []

    def watch(state: str):
        def check():
            now = counts(page)
            busy = sorted(s for s, n in now.items() if n)
            if not seen or seen[-1] != busy:
                seen.append(busy)
            return now[state] == 1
        wait_for(check, interval=0.1, what=f"the diagram to show the case {state}")
    watch("detected")  # the 3 s quiet period
    watch("running")   # held there by its job
    ws.drop_case("second", hold="go")
    wait_for(lambda: counts(page)["detected"] == 1 and counts(page)["running"] == 1,
             what="a second case on the diagram")
    shot(page, tmp_path, "overview")
    assert page.locator("#live").inner_text() == "· live"
    ws.release("go")
    watch("success")
    wait_for(lambda: counts(page)["success"] == 2, what="both cases to succeed")
    assert page.evaluate("window.__sameDocument") == "yes"
    assert page.locator("#n-success").inner_text() == "2"
    assert page.locator("#state-success").get_attribute("class").endswith("busy")
    assert "2 cases, 0 active." in page.locator("#summary").inner_text()
    assert ["detected"] in seen and ["running"] in seen, seen
    assert page.locator("#recent tbody tr").count() == 2
    assert not page.script_errors and not page.dialogs
    # nothing from the internet: the page, its script, style and icon, and its JSON
    assert page.requests and all(u.startswith(url) for u in page.requests), page.requests
    assert {u.split("?")[0][len(url) - 1:] for u in page.requests} == {
        "/", "/static/style.css", "/static/app.js", "/static/favicon.svg", "/api/summary",
        "/api/cases"}


def test_the_case_page_shows_its_history_live(site, browser_page, tmp_path):
    ws, url = site
    page = browser_page
    ws.drop_case("story", hold="end", exit_code=3)
    row = ws.wait_state("story", "running")
    page.goto(f"{url}cases/{row.id}")
    history = page.locator("#history li")
    assert history.count() == 6  # detect .. submit
    # its durations: the phase it is in counts up without a reload
    run = page.locator('#durations [data-phase="run"]')
    shown = run.inner_text()
    wait_for(lambda: run.inner_text() not in ("–", shown), what="the run's time to count up")
    assert page.locator('#durations [data-phase="results"]').inner_text() == "–"
    ws.release("end")
    ws.wait_state("story", "failure")
    wait_for(lambda: history.count() == 7, what="the fail to appear without a reload")
    wait_for(lambda: page.locator("#job-times-source").inner_text() ==
             "as its queue reported them", what="the job's times from its wrapper")
    assert page.locator('#durations [data-phase="results"]').inner_text().endswith(" s")
    wait_for(lambda: page.locator('[data-field="state"]').inner_text() == "failure",
             what="the state field")
    assert page.locator('[data-field="reason"]').inner_text() == "job exited with code 3"
    triggers = [t for t in page.locator("#history .trigger").all_inner_texts()]
    assert triggers == [h[2] for h in ws.history("story")]
    page.reload()  # now with the job log and where the results are
    assert "job of case" in page.locator("pre.log").inner_text()
    results = ws.case("story").results_path
    assert results and page.get_by_text(results).count() >= 1
    shot(page, tmp_path, "case")
    page.goto(f"{url}hosts")
    wait_for(lambda: page.locator("#live").inner_text() == "· live", what="a live refresh")
    assert page.locator("#hosts tbody tr").count() == 1
    assert page.locator("#hosts tbody td").nth(1).inner_text() == "up"
    assert page.locator("#groups tbody tr").count() == 2
    assert page.locator("#slots tbody tr").count() == 3
    shot(page, tmp_path, "hosts")
    page.goto(f"{url}cases?state=failure")
    assert page.locator("#cases tbody tr").count() == 1
    time_cell = page.locator("#cases tbody td.time")
    assert re.fullmatch(r"\d+ s", time_cell.inner_text()), time_cell.inner_text()
    wait_for(lambda: page.locator("#live").inner_text() == "· live", what="a live refresh")
    assert re.fullmatch(r"\d+ s", time_cell.inner_text()), time_cell.inner_text()
    shot(page, tmp_path, "cases")
    assert not page.script_errors and not page.dialogs


def test_the_case_page_shows_a_running_jobs_tail_refreshed(ws, browser_page, tmp_path):
    """The job's last lines, read on the host while it runs, come in without a reload; what
    the job prints as markup or terminal controls shows as text."""
    page = browser_page
    job = ('echo "<img src=x onerror=alert(1)> first"; printf \'red \\033[31m!\\n\'; '
           'while [ ! -e "{ctl}/more" ]; do sleep 0.05; done; echo "second"; '
           'while [ ! -e "{ctl}/end" ]; do sleep 0.05; done').replace("{ctl}", str(ws.ctl))
    ws.write_config(web=WEB, backend={"kind": "direct", "command": job})
    url = ws.start().web.url
    ws.drop_case("tailing")
    row = ws.wait_state("tailing", "running")
    page.goto(f"{url}cases/{row.id}")
    text = page.locator("#log-text")
    wait_for(lambda: text.inner_text() == "<img src=x onerror=alert(1)> first\nred \\x1b[31m!",
             what="the first lines")
    assert page.locator("#log").get_attribute("data-live") == "true"
    assert "The job's output in local:" in page.locator("#log-about").inner_text()
    read = page.locator("#log-about time")  # when the lines were read, in the browser's zone
    zone = ZoneInfo(page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone"))
    wait_for(lambda: read.count() == 1, what="when the lines were read")
    stamp = read.get_attribute("datetime")
    assert read.inner_text() == local_time(
        datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp(), time.time(), zone)
    assert f", read at {read.inner_text()} (again every 3 s" in page.locator("#log-about").inner_text()
    (ws.ctl / "more").touch()
    wait_for(lambda: text.inner_text().endswith("\nsecond"), what="the next line, without a reload")
    shot(page, tmp_path, "case-tail")
    (ws.ctl / "end").touch()
    wait_for(lambda: page.locator("#log").get_attribute("data-live") == "false",
             what="the kept log once the case ended")
    assert text.inner_text().endswith("\nsecond")
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert not page.script_errors and not page.dialogs


# The hostile suite's names (tests/reliability/test_hostile.py), and markup meant to run a
# script wherever a name is shown. A folder name cannot hold "/": those are written into the
# store directly (a name is only data there), as are reasons and errors that carry markup.
HOSTILE = ["with space", "quote'single", 'quote"double', "$(touch CANARY)", "`touch CANARY`",
           "semi;touch CANARY", "pipe|touch CANARY", "new\nline", "tab\there", "-leading-dash",
           "long_" + "x" * 215, unicodedata.normalize("NFC", "café_ünï"),
           unicodedata.normalize("NFD", "café_ünï"), "amp&touch CANARY&", "glob*?[x]",
           "<img src=x onerror=alert(1)>", "<svg onload=alert(2)>", "\"><b onmouseover=alert(3)>x",
           "'><iframe srcdoc=&lt;script&gt;alert(4)&lt;&#47;script&gt;>", "{{7*7}}${7*7}",
           "&lt;b&gt;entity&amp;", "<!--", "]]><x>", "\u202eevil\u202c", "zero\u200bwidth"]
IN_STORE = ["<script>alert(5)</script>", "</td></tr></table><script>alert(6)</script>",
            "javascript:alert(7)//", "<a href=javascript:alert(8)>x</a>"]


def test_hostile_names_are_shown_verbatim_and_run_nothing(site, browser_page, tmp_path):
    ws, url = site
    page = browser_page
    for i, name in enumerate(HOSTILE):
        staging = ws.root / "staging" / f"h{i}"
        staging.mkdir(parents=True)
        (staging / "data.txt").write_text(name)
        os.rename(staging, ws.inbox / name)
    conn = sqlite3.connect(ws.database)
    with conn:
        for name in IN_STORE:
            conn.execute("INSERT INTO cases (name, local_path, state, next_attempt_at, created_at,"
                         " updated_at, reason, last_error) VALUES (?, '/nonexistent', 'failure',"
                         " 0, ?, ?, ?, ?)", (name, time.time(), time.time(), name, name))
    conn.close()
    names = HOSTILE + IN_STORE
    wait_for(lambda: sum(r.state == "success" for r in ws.cases()) == len(HOSTILE),
             timeout=DEADLINE * 3, what="the hostile cases to succeed")

    def assert_clean(where: str):
        assert not page.dialogs, (where, page.dialogs)
        assert page.evaluate("document.querySelectorAll('img, iframe, svg:not(.machine), "
                             "b:not(.trigger), x, a[href^=javascript]').length") == 0, where
        assert page.evaluate("document.scripts.length") == 1, where
        assert not page.script_errors, (where, page.script_errors)

    page.goto(f"{url}cases?per_page=50")
    wait_for(lambda: page.locator("#live").inner_text() == "· live", what="a live refresh")
    shown = page.locator("#cases td.name").all_text_contents()
    assert sorted(shown) == sorted(printable(n) for n in names)
    assert_clean("/cases")
    shot(page, tmp_path, "hostile-cases")
    page.goto(url)
    wait_for(lambda: page.locator("#live").inner_text() == "· live", what="a live refresh")
    assert_clean("/")
    for row in ws.cases():
        page.goto(f"{url}cases/{row.id}")
        assert page.locator("#case-name").text_content() == printable(row.name)
        if row.name in IN_STORE:
            assert page.locator('[data-field="reason"]').text_content() == printable(row.name)
        assert_clean(f"/cases/{row.id}")
    page.goto(f"{url}cases?q=" + "%3Cscript%3E")  # the search is echoed in the form
    assert page.locator("#q").input_value() == "<script>"
    assert sorted(page.locator("#cases td.name").all_text_contents()) == sorted(IN_STORE[:2])
    assert_clean("/cases?q=")
    page.goto(f"{url}hosts")
    assert_clean("/hosts")


def test_first_paint_with_10000_cases(ws, browser_page, tmp_path):
    """Printed, not a timed assertion: the bound is generous (a loaded 2-core machine)."""
    fill_cases(ws.database, 9_900)
    fill_cases(ws.database, 100, state="failure", name="failed-{i:03d}", reason="job exited with code 1")
    ws.write_config(web=WEB)
    url = ws.start().web.url
    page = browser_page
    page.goto(url)  # a first visit: the browser learns the script and the style
    figures = {}
    for path in ("", "cases", "cases?state=failure&q=failed-0"):
        page.goto(url + path, wait_until="load")
        paint = page.evaluate("""() => new Promise((resolve) => {
            const done = (p) => {
                const n = performance.getEntriesByType('navigation')[0];
                resolve({paint: p ? p.startTime : null, load: n.loadEventEnd,
                         first_byte: n.responseStart, dom: n.domContentLoadedEventEnd,
                         bytes: n.transferSize});
            };
            new PerformanceObserver((list) => {
                const p = list.getEntriesByName('first-contentful-paint')[0];
                if (p) done(p);
            }).observe({type: 'paint', buffered: true});
            setTimeout(() => done(null), 20000);
        })""")
        figures["/" + path] = paint
        assert paint["paint"] is not None
    rows = page.locator("#cases tbody tr").count()
    assert rows == 50 and page.locator("#pageinfo").first.inner_text() == \
        "page 1 of 2, 100 cases"
    page.goto(url + "cases")
    assert "page 1 of 200, 10000 cases" in page.locator("#pageinfo").first.inner_text()
    shot(page, tmp_path, "cases-10000")
    for path, f in figures.items():
        print(f"first paint with 10,000 cases, {path}: {f['paint']:.0f} ms (first byte "
              f"{f['first_byte']:.0f} ms, DOM ready {f['dom']:.0f} ms, load {f['load']:.0f} ms, "
              f"{f['bytes']} bytes; load average {os.getloadavg()[0]:.1f})")
    assert all(f["paint"] < 5000 for f in figures.values()), figures


def test_a_busy_overview(ws, browser_page, tmp_path):
    """The picture in docs/status-page.md: cases in most states at once, the diagram's
    numbers those of the store. ($CASEFLOW_SCREENSHOTS=docs writes docs/status-page.png.)"""
    import threading
    fill_cases(ws.database, 40, name="done-{i:02d}")
    fill_cases(ws.database, 3, state="failure", name="broken-{i}", reason="job exited with code 2")
    ws.write_config(web=WEB, stability={"quiet_seconds": 2, "rescan_seconds": 5})
    url = ws.start().web.url
    for i in range(4):
        ws.drop_case(f"sim-{i}", hold="busy")          # gpu_a has 2 slots: 2 run, 2 wait
    ws.drop_case("render", group="gpu_b", hold="busy")  # gpu_b has 1
    copying = ws.inbox / "still-copying"
    copying.mkdir()
    stop = threading.Event()

    def keep_writing():  # a copy in progress: never quiet, so it stays detected
        n = 0
        while not stop.is_set():
            (copying / f"part-{n % 5}").write_bytes(b"z" * 1000)
            n += 1
            stop.wait(0.2)
    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        expected = {"detected": 1, "queued": 2, "running": 3, "success": 40, "failure": 3}
        wait_for(lambda: all(sum(r.state == s for r in ws.cases()) == n
                             for s, n in expected.items()), what="the scene")
        page = browser_page
        page.goto(url)
        wait_for(lambda: {s: n for s, n in counts(page).items() if n} == expected,
                 what="the diagram to show the scene")
        shot(page, tmp_path, "page")
    finally:
        stop.set()
        writer.join()
        ws.release("busy")
    assert not page.script_errors


NEW_YORK = ZoneInfo("America/New_York")


def in_new_york(text: str) -> str:
    """How the page writes a time (ISO 8601) in New York: as web.pages.local_time."""
    return local_time(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp(),
                      time.time(), NEW_YORK)


def live(page) -> bool:
    return page.locator("#live").inner_text() == "· live"


def test_the_first_screen_shows_what_needs_a_person_then_the_cases(ws, new_york_page, tmp_path):
    """At 1400×1000, before any scrolling: what needs a person (the unreachable host; cases
    failed, retrying, waiting for the host, stuck) and at least ten rows of the case list,
    the diagram below them. Times are New York's (the browser's zone), each <time> keeping
    the ISO 8601 UTC; also in what the script rebuilds. (A status page without a daemon,
    which would move the scene's cases.)"""
    ws.write_config(web=WEB)
    now = time.time()
    ids = needs_a_person(ws, now)
    server = web.start(ws.config(), load_spec())
    page = new_york_page
    try:
        page.goto(server.url)
        wait_for(lambda: live(page), what="a live refresh")

        def names(key: str) -> list[str]:
            return [t.split(" ", 1)[1] for t in
                    page.locator(f"#attn-{key} li > a").all_inner_texts()]
        banner = page.locator("#alerts li")
        assert banner.count() == 1
        since = banner.locator("time").get_attribute("datetime")
        assert since == iso(now - 1500)
        assert banner.inner_text() == (f"host local: UNREACHABLE since {in_new_york(since)}: "
                                       f"{UNREACHABLE_TEXT}")
        failed = page.locator("#attn-failed")
        assert failed.locator("h3").inner_text() == "Failed in 24 h: 3 failure, 1 not_found"
        assert failed.locator("h3 a").first.get_attribute("href") == "/cases?state=failure"
        assert names("failed") == ["lost-0", "broken-2", "broken-1", "broken-0"]  # the latest first
        assert names("retrying") == ["flaky-0", "flaky-1"]
        assert page.locator("#attn-retrying li").first.inner_text() == (
            f"{ids['flaky-0']} flaky-0 case.yaml: cannot read it: Permission denied (stable, "
            f"3 attempts since {in_new_york(iso(now - 900))})")
        assert page.locator("#attn-failed li").first.inner_text() == (
            f"{ids['lost-0']} lost-0 the queue no longer knows the job (not_found, "
            f"{in_new_york(iso(now - 500))})")
        assert page.locator("#attn-waiting .n").inner_text() == "21"  # the queued and upload-wait
        assert names("waiting") == ["slow-0", "slow-1", "upload-wait", "queued-00", "queued-01"]
        assert page.locator("#attn-waiting .more").inner_text() == "and 16 more"
        assert "waiting for host local: cannot connect" in \
            page.locator("#attn-waiting li").nth(2).inner_text()
        assert names("stuck") == ["slow-0", "slow-1"]
        assert page.locator("#calm").is_hidden()

        # all of it, and ten cases or more, on the first screen; the diagram after them
        def box(locator) -> dict:
            b = locator.bounding_box()
            return {"top": b["y"], "bottom": b["y"] + b["height"]}
        attention = box(page.locator("#attention"))
        assert attention["top"] < 200 and attention["bottom"] < 1000, attention
        rows = page.locator("#recent tbody tr")
        assert rows.count() == 20
        shown = [i for i in range(rows.count()) if box(rows.nth(i))["bottom"] <= 1000]
        assert len(shown) >= 10 and shown[0] == 0, shown
        assert box(rows.nth(0))["top"] > attention["bottom"]
        assert page.locator("#recent td.name").first.inner_text() == "slow-0"  # active first
        diagram = box(page.locator("svg.machine"))
        assert diagram["top"] > box(page.locator("#recent"))["bottom"], diagram
        shot(page, tmp_path, "first-screen")

        # every time on the page in New York's zone, its datetime and title in UTC
        assert page.locator("#zone").inner_text() == "times in America/New_York"
        times = page.locator("time")
        assert times.count() >= 10  # the header, the banner, the lists, the retrying cases
        for i in range(times.count()):
            t = times.nth(i)
            stamp = t.get_attribute("datetime")
            assert stamp.endswith("Z") and t.get_attribute("title") == stamp
            assert t.inner_text() == in_new_york(stamp), stamp
        assert page.locator("#recent tr", has_text="flaky-0").locator("td.reason time").count() == 1

        # a case that fails now comes into the list without a reload, its time New York's
        ended = time.time()
        add_case(ws.database, "broken-new", "failure", now - 60, ended,
                 (("running", "failure", "fail", ended),), reason="job exited with code 9")
        wait_for(lambda: names("failed")[:1] == ["broken-new"], what="the new failure listed")
        first = page.locator("#attn-failed li").first.locator("time")
        assert first.get_attribute("datetime") == iso(ended)
        assert first.inner_text() == in_new_york(iso(ended))
        assert failed.locator("h3").inner_text() == "Failed in 24 h: 4 failure, 1 not_found"

        # a time of July 2025, in New York's summer time; the history as the script wrote it
        page.goto(f"{server.url}cases/{ids['july']}")
        wait_for(lambda: live(page), what="a live refresh")
        detected = page.locator("dl.fields time").first
        assert detected.get_attribute("datetime") == "2025-07-04T16:05:09Z"
        assert detected.get_attribute("title") == "2025-07-04T16:05:09Z"
        assert detected.inner_text() == "Fri 4 Jul 2025 12:05:09"
        assert page.locator("#history time").inner_text() == "Fri 4 Jul 2025 13:05:09"
        assert page.locator("#history time").get_attribute("datetime") == iso(JULY + 3600)
        page.goto(f"{server.url}hosts")
        wait_for(lambda: live(page), what="a live refresh")
        assert page.locator("#hosts tbody time").inner_text() == in_new_york(since)
        assert not page.script_errors and not page.dialogs
    finally:
        server.stop()
