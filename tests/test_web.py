"""The status page over plain HTTP: served by the real daemon from the real store; the JSON
is what the command line prints; read-only; nothing outside the status data is served;
the token and the Host check; config mistakes; a stuck client never holds up the tick."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from caseflow import web
from caseflow.spec import load_spec
from caseflow.views import iso
from caseflow.web.pages import local_time
from harness import DEADLINE, wait_for
from sshd import transport_settings
from webtools import JULY, UNREACHABLE_TEXT, WEB, fill_cases, get_json, needs_a_person, request


@pytest.fixture
def site(ws):
    ws.write_config(web=WEB)
    daemon = ws.start()
    return ws, daemon.web.url


def test_off_by_default(ws):
    daemon = ws.start()
    assert daemon.web is None
    assert ws.config().web is None


def test_json_is_what_the_command_line_prints(site):
    ws, url = site
    ws.drop_case("good")
    ws.drop_case("bad", exit_code=3)
    ws.wait_state("good", "success")
    ws.wait_state("bad", "failure")
    wait_for(lambda: not any(r.wrapup for r in ws.cases()), what="the wrap-ups")  # then still
    for name in ("good", "bad"):
        row = ws.case(name)
        cli = json.loads(ws.cli("show", "--json", str(row.id), check=True).stdout)
        assert get_json(url, f"/api/cases/{row.id}") == cli
        assert [h["trigger"] for h in cli["history"]][-1] == ("complete" if name == "good"
                                                              else "fail")
    listed = get_json(url, "/api/cases?per_page=1000")
    status = json.loads(ws.cli("status", "--json", check=True).stdout)
    assert sorted(listed["cases"], key=lambda c: c["id"]) == status
    assert listed["total"] == 2 and listed["pages"] == 1
    resources = json.loads(ws.cli("resources", "--json", check=True).stdout)
    assert get_json(url, "/api/hosts")["slots"] == resources


def test_tables_filter_search_and_pages_without_a_script(site):
    ws, url = site
    fill_cases(ws.database, 120, name="alpha-{i:03d}")
    fill_cases(ws.database, 5, state="failure", name="beta-{i}", reason="job exited with code 3")
    status, _, body = request(url, "/cases?state=failure")
    text = body.decode()
    assert status == 200 and text.count('<tr data-id="') == 5
    assert "beta-4" in text and "alpha-" not in text and "job exited with code 3" in text
    text = request(url, "/cases?q=ALPHA-11")[2].decode()  # name contains, any case
    assert text.count('<tr data-id="') == 10  # alpha-110 .. alpha-119
    first = request(url, "/cases")[2].decode()
    assert "page 1 of 3, 125 cases" in first and 'rel="next"' in first
    third = request(url, "/cases?page=3")[2].decode()
    assert third.count('<tr data-id="') == 25 and 'rel="prev"' in third
    page = get_json(url, "/api/cases?state=success&per_page=7&page=2")
    assert page["total"] == 120 and page["pages"] == 18 and len(page["cases"]) == 7
    status, _, body = request(url, "/cases?state=nonsense")
    assert status == 400 and b"unknown state" in body


def test_upload_progress_on_the_case_page(ws):
    """A case in the middle of its upload (written into a real store the way the engine does:
    a transition, then progress), served by a status server of its own (no engine)."""
    ws.write_config(web=WEB)
    store = ws.store
    store.migrate()
    store.sync_slots(ws.config().hosts)
    now = time.time()
    case_id = store.create_case("big", str(ws.inbox / "big"), "1", "detected", now - 30, now)
    for src, dst, trigger in (("detected", "stable", "stabilize"), ("stable", "queued", "enqueue"),
                              ("queued", "gpu_locked", "lock_gpu")):
        store.commit_transition(case_id, src, dst, trigger, now - 20,
                                {"grp": "gpu_a"} if dst == "queued" else None)
    store.set_progress(case_id, 250_000_000, 1_000_000_000)
    server = web.start(ws.config(), load_spec())
    try:
        detail = get_json(server.url, f"/api/cases/{case_id}")
        up = detail["upload"]
        assert up["bytes"] == 250_000_000 and up["total"] == 1_000_000_000
        assert up["percent"] == 25.0
        assert 8e6 < up["rate_bytes_per_second"] < 13e6  # 250 MB in about 20 s
        assert 40 < up["seconds_left"] < 120
        html = request(server.url, f"/cases/{case_id}")[2].decode()
        assert "250.0 MB of 1.0 GB (25.0 %)" in html and "MB/s" in html and "left" in html
    finally:
        server.stop()


def test_read_only_no_request_changes_anything(site):
    ws, url = site
    ws.drop_case("kept")
    ws.wait_state("kept", "success")
    wait_for(lambda: not ws.case("kept").wrapup, what="the wrap-up")  # then nothing moves

    def snapshot():
        conn = sqlite3.connect(ws.database)
        try:
            return [conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                    for t in ("cases", "history", "slots", "hosts", "meta")]
        finally:
            conn.close()
    before = snapshot()
    row = ws.case("kept")
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
        for path in ("/", f"/cases/{row.id}", f"/api/cases/{row.id}", "/metrics"):
            status, headers, _ = request(url, path, method=method,
                                         body=b'{"request": "retry"}' if method != "TRACE" else None)
            assert status == 405, (method, path, status)
            assert headers["allow"] == "GET, HEAD"
    for path in (f"/cases/{row.id}?request=retry", f"/api/cases/{row.id}?state=stable&retry=1"):
        assert request(url, path)[0] == 200
    assert request(url, "/", method="HEAD")[2] == b""
    assert snapshot() == before
    # and the page's own connection could not write if it tried
    reader = ws.daemon.web.app.reader
    with reader.lock, pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
        reader._store.connection().execute("UPDATE cases SET state = 'stable'")


TRAVERSAL = ["/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
             "/static/..%2f..%2f..%2fetc%2fpasswd", "/static/....//....//etc/passwd",
             "/static/%252e%252e/etc/passwd", "/static/../server.py", "/static/..%2fserver.py",
             "/static/%2e%2e%2fapp.py", "/static//etc/passwd", "/static/./app.js/../../app.py",
             "/../../etc/passwd", "//etc/passwd", "/etc/passwd", "/cases/../../../etc/passwd",
             "/cases/1/../../../../etc/passwd", "/api/cases/..%2f..%2fetc%2fpasswd",
             "/static/app.js%00.png", "/static/%00", "/static/", "/static", "/static/APP.JS",
             "/../caseflow.yaml", "/caseflow.yaml", "/var/caseflow.db", "/static/../../var/caseflow.db",
             "http://evil.example/etc/passwd", "/static/\\..\\..\\etc\\passwd"]


def test_nothing_outside_the_status_data_is_served(site):
    ws, url = site
    assert request(url, "/static/app.js")[0] == 200  # the control: a file that is served
    db_head = ws.database.read_bytes()[:16]
    for path in TRAVERSAL:
        status, _, body = request(url, path)
        assert status in (400, 404, 421), (path, status)
        assert b"root:" not in body and db_head not in body and b"import " not in body and \
            b"inbox:" not in body, path


def test_a_token_when_configured(ws, tmp_path):
    token = "s3cret-token-0123456789abcdef"
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(0o600)
    ws.write_config(web={**WEB, "token_file": str(tmp_path / "token")})
    url = ws.start().web.url
    for path in ("/", "/api/summary", "/metrics", "/static/app.js"):
        status, headers, _ = request(url, path)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert request(url, path, headers={"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
        assert request(url, path, headers={"Authorization": f"Bearer {token}"})[0] == 200
    status, headers, _ = request(url, f"/cases?state=success&token={token}")
    assert status == 303 and headers["location"] == "/cases?state=success"
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    assert request(url, "/cases", headers={"Cookie": cookie})[0] == 200
    assert request(url, "/cases", headers={"Cookie": "caseflow_token=nope"})[0] == 401
    assert request(url, "/?token=wrong")[0] == 401


def test_only_loopback_names_on_a_loopback_address(site):
    """A page elsewhere whose own name resolves to 127.0.0.1 (DNS rebinding) reads nothing."""
    ws, url = site
    port = ws.daemon.web.port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
        assert request(url, "/api/summary", headers={"Host": host})[0] == 421, host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
        assert request(url, "/api/summary", headers={"Host": host})[0] == 200, host


@pytest.mark.parametrize("settings, words", [
    ({"listen": "0.0.0.0:8765"}, "web.token_file: is required when listen is not a loopback"),
    ({"listen": "8765"}, "web.listen: expected an address and port"),
    ({"listen": "127.0.0.1:99999"}, "web.listen: expected an address and port"),
    ({"listen": "127.0.0.1:8765", "token_file": "missing"}, "web.token_file: cannot read"),
    ({"listen": "127.0.0.1:8765", "token_file": "short"}, "at least 16 letters"),
    ({"listen": "127.0.0.1:8765", "token_file": "spaced"}, "at least 16 letters"),
    ({"listen": "127.0.0.1:8765", "colour": "red"}, "web.colour: unknown key"),
])
def test_config_mistakes_name_the_key_and_touch_nothing(ws, settings, words):
    (ws.root / "short").write_text("abc\n")
    (ws.root / "spaced").write_text("a token; with spaces and a semicolon\n")
    ws.write_config(web=settings)
    proc = ws.cli("run", timeout=DEADLINE)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert not ws.database.exists()


def test_a_taken_port_is_a_clear_error(ws):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ws.write_config(web={"listen": f"127.0.0.1:{taken.getsockname()[1]}"})
        proc = ws.cli("run", timeout=DEADLINE)
    assert proc.returncode == 1
    assert "web.listen 127.0.0.1:" in proc.stderr and "cannot listen there" in proc.stderr


def test_a_stuck_client_does_not_hold_up_the_daemon(site):
    ws, url = site
    port = ws.daemon.web.port
    stuck = []
    try:
        for _ in range(5):  # half a request each, then nothing
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /api/summary HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            stuck.append(s)
        ticks = ws.ticks
        ws.drop_case("through")
        ws.wait_state("through", "success")
        assert ws.ticks > ticks
        assert get_json(url, "/api/summary")["states"]["success"] == 1
    finally:
        for s in stuck:
            s.close()


def test_the_overview_counts_and_the_summary_agree(site):
    ws, url = site
    fill_cases(ws.database, 30)
    fill_cases(ws.database, 4, state="failure", name="f-{i}", reason="x")
    summary = get_json(url, "/api/summary")
    assert summary["states"]["success"] == 30 and summary["states"]["failure"] == 4
    assert summary["total"] == 34 and summary["groups"] == {}  # per group: the active ones
    html = request(url, "/")[2].decode()
    assert 'id="count-success" x=' in html and '>30</text>' in html
    assert '<span class="count" id="n-failure">4</span>' in html
    assert {s.name for s in load_spec().states} <= {
        part.split('"')[0] for part in html.split('id="state-')[1:]}


def test_a_paused_host_on_the_pages_and_in_the_metrics(site):
    """Work on the host paused (as the engine records it: a problem with its time)."""
    ws, url = site
    since = time.time() - 1200
    ws.store.set_host_problem("local", "authentication failed <b>(check the key)</b>", since)
    ws.store.set_host_notice("local", "pueue group gpu_a is paused", since)
    hosts = get_json(url, "/api/hosts")["hosts"]
    assert hosts == [{"name": "local", "transport": "local", "backend": "direct",
                      "status": "paused", "problem": "authentication failed <b>(check the key)</b>",
                      "problem_kind": "config", "problem_head": "work PAUSED",
                      "problem_line": hosts[0]["problem_line"],
                      "since": hosts[0]["paused_since"], "paused_since": hosts[0]["paused_since"],
                      "free_bytes": hosts[0]["free_bytes"],
                      "notice": "pueue group gpu_a is paused", "drain": None,
                      "drain_reason": None, "drain_since": None, "probing": False}]
    assert hosts[0]["paused_since"].endswith("Z")
    assert hosts[0]["problem_line"] == (f"work PAUSED since {hosts[0]['since']}: "
                                        "authentication failed <b>(check the key)</b>")
    assert hosts[0]["free_bytes"] > 0  # the probe at the daemon's start measured it
    for path in ("/", "/hosts"):
        html = request(url, path)[2].decode()
        assert "authentication failed &lt;b&gt;(check the key)&lt;/b&gt;" in html
        assert "<b>(check" not in html and "pueue group gpu_a is paused" in html
    text = request(url, "/metrics")[2].decode()
    assert 'caseflow_host_paused{host="local"} 1.0' in text
    paused_for = float(re.search(r'caseflow_host_paused_seconds\{host="local"\} (\S+)',
                                 text).group(1))
    assert 1190 < paused_for < 1200 + DEADLINE
    # drained by an operator (`caseflow host pause`), the problem over
    ws.store.set_host_problem("local", None, time.time())
    ws.store.set_host_drain("local", "disk swap <i>7</i>", since)
    [host] = get_json(url, "/api/hosts")["hosts"]
    assert host["status"] == "drained" and host["drain"].startswith("DRAINED since "), host
    assert "caseflow host resume local" in host["drain"]
    for path in ("/", "/hosts"):
        html = request(url, path)[2].decode()
        assert "disk swap &lt;i&gt;7&lt;/i&gt;" in html and "<i>7" not in html
        assert f'DRAINED since <time datetime="{host["drain_since"]}"' in html
    text = request(url, "/metrics")[2].decode()
    assert 'caseflow_host_drained{host="local"} 1.0' in text


# -- a running job's tail ----------------------------------------------------------------------
# prints markup, an ampersand and a colour, then waits for <ctl>/step-<case id>, then one more
TAIL_JOB = r"""
echo "line 1 <b>bold</b> & more"
printf 'colour \033[31mred\033[0m\n'
while [ ! -e "{ctl}/step-$CASEFLOW_CASE_ID" ]; do sleep 0.05; done
echo "line 2"
"""


def test_a_running_jobs_tail_is_read_on_the_host_at_most_every_few_seconds(ws, sshd):
    """The case page's job log while the job runs: its last lines read on the host (over the
    real sshd) by the daemon, refreshed, HTML-escaped, control characters as escapes; however
    many ask, at most one read per case every READ_SECONDS; the kept log once it has ended."""
    from caseflow.web.live_tails import READ_SECONDS
    ws.write_config(web=WEB, transport=transport_settings(sshd, ws.remote),
                    backend={"kind": "direct", "command": TAIL_JOB.replace("{ctl}", str(ws.ctl))})
    daemon = ws.start()
    url, live = daemon.web.url, daemon.web.app.live
    ws.drop_case("tailed")
    row = ws.wait_state("tailed", "running")
    path = f"/api/cases/{row.id}/log"
    first = wait_for(lambda: (j := get_json(url, path))["lines"][1:] and j,
                     what="the job's first lines on the page")
    assert first["live"] is True and first["problem"] is None
    assert first["lines"] == ["line 1 <b>bold</b> & more", "colour \\x1b[31mred\\x1b[0m"]
    assert first["source"] == f"testhost:{row.remote_path}/.caseflow/job.log"
    assert first["size"] == len(b"line 1 <b>bold</b> & more\ncolour \x1b[31mred\x1b[0m\n") and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                                                first["read_at"])
    html = request(url, f"/cases/{row.id}")[2].decode()
    assert ('<pre class="log" id="log-text">line 1 &lt;b&gt;bold&lt;/b&gt; &amp; more\n'
            "colour \\x1b[31mred\\x1b[0m</pre>") in html
    assert "\x1b" not in html and "The job&#x27;s output in testhost:" in html
    # when they were read: a <time> in the page, the ISO in the JSON
    stamp = re.search(r', read at <time datetime="([^"]+)" title="\1">\d\d:\d\d:\d\d</time> '
                      r"\(again every 3 s while it runs\): the last 2 lines\.</p>", html)
    assert stamp and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp.group(1)), html[-2000:]
    assert f", read at {first['read_at']} (again" in first["about"]

    # many viewers at once: the host is read at most once per case every READ_SECONDS
    reads, began = live.reads, time.monotonic()
    errors: list[str] = []

    def viewer():  # a page asks every second; these ask ten times as often, for a while
        while time.monotonic() - began < 2.5 * READ_SECONDS:
            try:
                assert get_json(url, path)["lines"][0] == "line 1 <b>bold</b> & more"
            except Exception as exc:  # noqa: BLE001 (reported below)
                errors.append(repr(exc))
            time.sleep(0.1)
    viewers = [threading.Thread(target=viewer) for _ in range(8)]
    for t in viewers:
        t.start()
    for t in viewers:
        t.join(DEADLINE)
    spent = time.monotonic() - began
    assert not errors, errors[:3]
    assert 1 <= live.reads - reads <= spent / READ_SECONDS + 1, (live.reads - reads, spent)

    (ws.ctl / f"step-{row.id}").touch()
    wait_for(lambda: get_json(url, path)["lines"][-1:] == ["line 2"] or
             ws.case("tailed").state == "success", what="line 2 on the page")
    ws.wait_state("tailed", "success")
    kept = get_json(url, path)
    assert kept["live"] is False and kept["read_at"] is None
    assert kept["lines"][-1] == "line 2" and kept["lines"][1] == "colour \\x1b[31mred\\x1b[0m"
    assert kept["source"].endswith(f"logs/{row.id}-1.log")


def test_cycling_through_more_running_cases_than_tails_kept_does_not_read_the_host_more(
        ws, monkeypatch):
    """A client asking for the tails of more running cases than are kept, one after the other
    and again: each case's log is still read at most once per READ_SECONDS, and the host at
    most HOST_READS_PER_SECOND times a second (each request read on the host when the evicted
    tail took its last read's time with it: a review). KEPT is made small to need few jobs."""
    from caseflow.web import live_tails
    monkeypatch.setattr(live_tails, "KEPT", 3)
    ws.write_config(web=WEB, groups={"gpu_a": {"slots": 8}},
                    backend={"kind": "direct", "command": TAIL_JOB.replace("{ctl}", str(ws.ctl))})
    daemon = ws.start()
    url, live = daemon.web.url, daemon.web.app.live
    names = [f"cycled{i}" for i in range(8)]
    for name in names:
        ws.drop_case(name)
    ids = [ws.wait_state(name, "running").id for name in names]
    reads, began = live.reads, time.monotonic()
    asked = 0
    while time.monotonic() - began < 2 * live_tails.READ_SECONDS:
        for case_id in ids:
            get_json(url, f"/api/cases/{case_id}/log")
            asked += 1
    spent = time.monotonic() - began
    done = live.reads - reads
    assert asked > 3 * len(ids)  # every case asked for again and again
    assert done <= min(len(ids) * (spent / live_tails.READ_SECONDS + 1),
                       spent * live_tails.HOST_READS_PER_SECOND + 1), (done, asked, spent)
    for case_id in ids:
        (ws.ctl / f"step-{case_id}").touch()
    for name in names:
        ws.wait_state(name, "success")


# -- what needs a person; times -----------------------------------------------------------
@pytest.fixture
def in_kolkata(monkeypatch):
    """The daemon's machine in India (UTC+05:30, no summer time): the page's times are
    written in its zone before a script runs."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


ISO_AS_TEXT = re.compile(r">[^<]*\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")  # an ISO time shown


def test_the_overview_says_what_needs_a_person_in_local_times(ws, in_kolkata):
    """/api/summary's `attention` and the overview without a script: the unreachable host,
    the cases that failed in the last 24 h (not those cancelled or older), those retrying,
    those waiting for the host, those unchanged for 4 h; every time shown in the daemon's zone
    as a <time> keeping the ISO 8601 UTC, which the JSON keeps as it was."""
    ws.write_config(web=WEB)
    now = time.time()
    ids = needs_a_person(ws, now)
    server = web.start(ws.config(), load_spec())
    try:
        url = server.url
        summary = get_json(url, "/api/summary")
        a = summary["attention"]
        assert a["failed"]["states"] == {"failure": 3, "not_found": 1}
        assert a["failed"]["total"] == 4 and a["failed"]["hours"] == 24
        assert [c["name"] for c in a["failed"]["cases"]] == ["lost-0", "broken-2", "broken-1",
                                                             "broken-0"]
        asked = datetime.fromisoformat(summary["at"].replace("Z", "+00:00")).timestamp()
        assert a["failed"]["since"] == iso(asked - 24 * 3600)
        assert (a["retrying"]["total"], [c["name"] for c in a["retrying"]["cases"]]) == \
            (2, ["flaky-0", "flaky-1"]) == (summary["retrying"], ["flaky-0", "flaky-1"])
        assert a["waiting"]["total"] == 21 and len(a["waiting"]["cases"]) == 5
        assert "(waiting for host local: cannot connect" in a["waiting"]["cases"][2]["state_text"]
        assert (a["stuck"]["total"], a["stuck"]["hours"]) == (2, 4)
        assert [c["name"] for c in a["stuck"]["cases"]] == ["slow-0", "slow-1"]
        listed = {c["id"]: c for c in get_json(url, "/api/cases?per_page=1000")["cases"]}
        for part in a.values():  # each case as `caseflow status --json` lists it
            for c in part["cases"]:
                assert c == listed[c["id"]]
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", c["updated_at"])

        html = request(url, "/")[2].decode()
        since = iso(now - 1500)
        in_india = local_time(now - 1500, now)
        assert in_india.endswith(datetime.fromtimestamp(
            now - 1500, ZoneInfo("Asia/Kolkata")).strftime("%H:%M:%S"))  # the daemon's zone
        assert (f'<li>host local: UNREACHABLE since <time datetime="{since}" title="{since}">'
                f"{in_india}</time>: {UNREACHABLE_TEXT}</li>") in html
        assert "times in IST" in html and '<p class="calm" id="calm" hidden>' in html
        for key in ("failed", "retrying", "waiting", "stuck"):
            assert f'<section class="attn" id="attn-{key}">' in html, key
        assert '<a href="/cases?state=failure">3 failure</a>, ' \
            '<a href="/cases?state=not_found">1 not_found</a>' in html
        assert "stopped-by-me" not in html.split('id="recent"')[0]  # cancelled: not a failure
        assert "old-fail" not in html.split('id="recent"')[0]
        assert html.index('id="attention"') < html.index('id="recent"') < html.index(
            'class="machine"')
        assert 'class="counts"' not in html  # the diagram's numbers: in a line, not a table

        # a time of another year, in the daemon's zone; the same in JSON as ISO 8601 UTC
        page = request(url, f"/cases/{ids['july']}")[2].decode()
        assert ('<dt>Detected</dt><dd><time datetime="2025-07-04T16:05:09Z" '
                'title="2025-07-04T16:05:09Z">Fri 4 Jul 2025 21:35:09</time></dd>') in page
        assert '<time datetime="2025-07-04T17:05:09Z" title="2025-07-04T17:05:09Z">' \
            "Fri 4 Jul 2025 22:35:09</time>" in page  # its history
        detail = get_json(url, f"/api/cases/{ids['july']}")
        assert detail["created_at"] == "2025-07-04T16:05:09Z" == iso(JULY)
        assert detail["history"][0]["at"] == "2025-07-04T17:05:09Z"
        # retrying: since when, and when it tries again
        flaky = request(url, f"/cases/{ids['flaky-0']}")[2].decode()
        assert (f'retrying since <time datetime="{iso(now - 900)}" title="{iso(now - 900)}">'
                f"{local_time(now - 900, now)}</time> (3 attempts): case.yaml") in flaky
        assert (f'<dt>Next attempt</dt><dd><span data-field="next"><time datetime="'
                f'{iso(now + 3600)}"') in flaky
        # no time anywhere is shown as ISO text, only in attributes
        for path in ("/", "/cases", f"/cases/{ids['july']}", f"/cases/{ids['flaky-0']}",
                     "/hosts"):
            text = request(url, path)[2].decode()
            assert not ISO_AS_TEXT.search(text), (path, ISO_AS_TEXT.search(text))
        hosts = get_json(url, "/api/hosts")["hosts"]
        assert (hosts[0]["problem_head"], hosts[0]["since"]) == ("UNREACHABLE", since)
        assert hosts[0]["problem_line"] == f"UNREACHABLE since {since}: {UNREACHABLE_TEXT}"
    finally:
        server.stop()


def test_nothing_needs_you(site):
    ws, url = site
    fill_cases(ws.database, 5)
    a = get_json(url, "/api/summary")["attention"]
    assert [a[k]["total"] for k in ("failed", "retrying", "waiting", "stuck")] == [0, 0, 0, 0]
    html = request(url, "/")[2].decode()
    assert '<p class="calm" id="calm">Nothing needs you: every host answers' in html
    for key in ("failed", "retrying", "waiting", "stuck"):
        assert f'<section class="attn" id="attn-{key}" hidden>' in html, key
    assert html.count('<tr data-id="') == 5
