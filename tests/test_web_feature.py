"""Steps of features/status_page.feature: the status page off by default, a case flowing
across it, read-only, a token off loopback, and its metrics."""

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pytest_bdd import given, parsers, scenarios, then, when

pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403  (shared steps become fixtures here)
from harness import DEADLINE, wait_for  # noqa: E402
from webtools import WEB, get_json, request  # noqa: E402

scenarios("status_page.feature")


def page_url(ws) -> str:
    assert ws.daemon is not None and ws.daemon.web is not None, "no status page is served"
    return ws.daemon.web.url


@given("the status page is turned on")
def page_on(ws):
    ws.write_config(web=WEB)


@given(parsers.parse("the status page is to listen on {address} without a token file"))
def page_elsewhere(ws, address):
    ws.write_config(web={"listen": address})


@then("no status page is served")
def no_page(ws):
    assert ws.daemon.web is None


@then(parsers.parse("the status page counts {n:d} case {words}"))
def page_counts(ws, n, words):
    state = words.split()[-1]
    url = page_url(ws)
    wait_for(lambda: get_json(url, "/api/summary")["states"][state] == n,
             what=f"the status page to count {n} case(s) {words}")


@then(parsers.parse('the status page shows the history of "{name}" as {states}'))
def page_history(ws, name, states):
    expected = [s.strip() for s in states.replace(" and ", ", ").split(",")]
    case = get_json(page_url(ws), f"/api/cases/{ws.case(name).id}")
    assert [h["to"] for h in case["history"]] == expected
    html = request(page_url(ws), f"/cases/{ws.case(name).id}")[2].decode()
    assert html.count("<li>") == len(expected)


@when(parsers.parse('someone asks the status page to retry "{name}"'), target_fixture="answers")
def ask_retry(ws, name):
    case_id = ws.case(name).id
    url = page_url(ws)
    return [request(url, f"/api/cases/{case_id}", method=m, body=b'{"request": "retry"}')[0]
            for m in ("POST", "PUT", "PATCH")] + \
        [request(url, f"/api/cases/{case_id}", method="DELETE")[0]]


@then("the status page refuses")
def refused(answers):
    assert answers == [405, 405, 405, 405]


@then(parsers.parse("caseflow refuses to start, saying that {key} is required"))
def refuses_to_start(ws, key):
    proc = ws.cli("run", timeout=DEADLINE)
    assert proc.returncode == 2 and f"{key}: is required" in proc.stderr, proc.stderr
    assert not ws.database.exists()


def metric_samples(ws):
    _, _, body = request(page_url(ws), "/metrics")
    return [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]


@then(parsers.parse("the metrics count {n:d} case in {state} on {group}"))
def metrics_count(ws, n, state, group):
    found = [s.value for s in metric_samples(ws)
             if s.name == "caseflow_cases" and s.labels == {"state": state, "group": group}]
    assert found == [n]


@then("the metrics show no case name as a label")
def no_names(ws):
    names = {r.name for r in ws.cases()}
    assert names and not any(v in names for s in metric_samples(ws) for v in s.labels.values())
