"""/metrics: checked by Prometheus' own promtool, scraped by a real Prometheus server (Debian's
package) that a test starts, whose query API then returns what a flowing case produced and
whose alert rules fire; the example alert rules and Grafana dashboard name only metrics the
daemon exports; case names never become label values."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlencode

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import DEADLINE, wait_for
from sshd import free_port
from webtools import WEB, get_json, request

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "config" / "prometheus" / "caseflow-alerts.yml"
ALERT_TESTS = ROOT / "config" / "prometheus" / "caseflow-alerts.test.yml"
DASHBOARD = ROOT / "config" / "grafana" / "caseflow-dashboard.json"
DOC = ROOT / "docs" / "status-page.md"
NAMES = ["metrics-name-check", "<b>label<b>", 'q"uote', "new\nline"]

pytestmark = pytest.mark.slow


def tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).exists():
        pytest.fail(f"{name} is missing: run `bash .ci/system-deps` as root (Debian package "
                    "prometheus)")
    return path


def scrape(url: str) -> str:
    status, headers, body = request(url, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    return body.decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples(text).items()
               if n == name and all(dict(ls).get(k) == w for k, w in labels.items()))


@pytest.fixture
def flowing(ssh_ws):
    """A daemon over the real sshd with the status page on; one case succeeded, one failed,
    and a few names that must never show up as label values."""
    ws = ssh_ws
    ws.write_config(web=WEB)
    url = ws.start().web.url
    before = scrape(url)
    ws.drop_case("fine", files={"data.bin": b"x" * 200_000})
    ws.drop_case("broken", exit_code=4)
    for name in NAMES:
        ws.drop_case(name)
    for name in ["fine", *NAMES]:
        ws.wait_state(name, "success")
    ws.wait_state("broken", "failure")
    return ws, url, before


def test_promtool_accepts_the_metrics_and_case_names_are_no_labels(flowing):
    ws, url, before = flowing
    text = scrape(url)
    proc = subprocess.run([tool("promtool"), "check", "metrics"], input=text, text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), \
        proc.stdout + proc.stderr
    labels = {v for (_, ls) in samples(text) for _, v in ls}
    for row in ws.cases():
        assert not any(row.name in v or v == row.name for v in labels if v), row.name
    # what the flow produced, as deltas (the counters belong to this test process)
    host = "testhost"
    assert value(text, "caseflow_cases", state="success") == 1 + len(NAMES)
    assert value(text, "caseflow_cases", state="failure", group="gpu_a") == 1
    assert value(text, "caseflow_transitions_total", trigger="complete", to="success") == 5
    assert value(text, "caseflow_transitions_total", trigger="fail", to="failure") == 1
    assert value(text, "caseflow_slots", host=host) == 3
    assert value(text, "caseflow_slots_in_use", host=host) == 0
    sent = value(text, "caseflow_upload_bytes_total", host=host) - \
        value(before, "caseflow_upload_bytes_total", host=host)
    assert sent >= 200_000 + sum(r.size_bytes or 0 for r in ws.cases() if r.name != "fine")
    for name in ("caseflow_upload_duration_seconds_count", "caseflow_poll_duration_seconds_count",
                 "caseflow_ssh_commands_total"):
        assert value(text, name, host=host) > value(before, name, host=host), name
    # the connection is opened by the host's probe at the daemon's start (perhaps before
    # `before` was scraped) and then kept
    assert value(text, "caseflow_ssh_connects_total", host=host) >= 1
    assert value(text, "caseflow_tick_duration_seconds_count") > \
        value(before, "caseflow_tick_duration_seconds_count")
    assert value(text, "caseflow_host_paused", host=host) == 0


def test_a_real_prometheus_scrapes_the_daemon(ssh_ws, tmp_path):
    """Prometheus scrapes every second with a bearer token; its query API returns the values
    a flowing case produced, and the alert for a failed case fires."""
    ws = ssh_ws
    token = "prometheus-token-0123456789"
    (tmp_path / "token").write_text(token)
    (tmp_path / "token").chmod(0o600)
    ws.write_config(web={**WEB, "token_file": str(tmp_path / "token")})
    port = ws.start().web.port
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "caseflow", "scrape_interval": "1s",
                            "authorization": {"type": "Bearer",
                                              "credentials_file": str(tmp_path / "token")},
                            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}))
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([tool("prometheus"), f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}",
                             "--log.level=warn"], stdout=log, stderr=log)
    api = f"http://127.0.0.1:{prom_port}"

    def query(expr: str) -> float | None:
        status, _, body = request(api, "/api/v1/query?" + urlencode({"query": expr}))
        result = json.loads(body)["data"]["result"] if status == 200 else []
        return float(result[0]["value"][1]) if result else None
    try:
        def ready():
            try:
                return prom.poll() is not None or request(api, "/-/ready")[0] == 200
            except OSError:  # not listening yet
                return False
        wait_for(ready, what="Prometheus to be ready")
        assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
        wait_for(lambda: query('up{job="caseflow"}') == 1, what="the first scrape")
        ws.drop_case("scraped", files={"data.bin": b"y" * 300_000})
        ws.drop_case("fails", exit_code=5)
        ws.wait_state("scraped", "success")
        ws.wait_state("fails", "failure")
        checks = {
            'sum(caseflow_cases{state="success"})': lambda v: v == 1,
            'sum(caseflow_cases{state="failure"})': lambda v: v == 1,
            'sum(caseflow_transitions_total{trigger="complete"})': lambda v: v == 1,
            'sum(caseflow_transitions_total{trigger="upload"})': lambda v: v == 2,
            'sum(caseflow_upload_bytes_total{host="testhost"})': lambda v: v >= 300_000,
            'sum(caseflow_poll_duration_seconds_count{host="testhost"})': lambda v: v >= 1,
            'sum(caseflow_ssh_commands_total{host="testhost"})': lambda v: v >= 4,
            'sum(caseflow_slots_in_use)': lambda v: v == 0,
        }
        for expr, ok in checks.items():
            wait_for(lambda: (v := query(expr)) is not None and ok(v),
                     what=f"Prometheus to return {expr} (last: {query(expr)})")

        def failed_alert():
            alerts = json.loads(request(api, "/api/v1/alerts")[2])["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "CaseflowCaseFailed"
                    and a["state"] == "firing" and a["labels"]["to"] == "failure"]
        assert wait_for(failed_alert, what="the CaseflowCaseFailed alert to fire")
    finally:
        prom.terminate()
        prom.wait(timeout=DEADLINE)
        log.close()


def test_the_alert_rules_pass_promtool():
    check = subprocess.run([tool("promtool"), "check", "rules", str(ALERTS)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 9 rules found" in check.stdout, \
        check.stdout + check.stderr
    # the rules' own unit tests: each alert fires when it should and not before
    unit = subprocess.run([tool("promtool"), "test", "rules", ALERT_TESTS.name],
                          cwd=ALERT_TESTS.parent, capture_output=True, text=True, timeout=60)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def _exported(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


def test_the_dashboard_the_rules_and_the_docs_name_real_metrics(ssh_ws):
    ws = ssh_ws  # a host over SSH: its series exist from the start
    ws.write_config(web=WEB)
    exported = _exported(scrape(ws.start().web.url))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    used = set()
    for text in [*exprs, ALERTS.read_text()]:
        used |= set(re.findall(r"\b(?:caseflow|process)_[a-z_]+\b", text))
    assert used and used <= exported, used - exported
    documented = set(re.findall(r"`(caseflow_[a-z_]+)`", DOC.read_text()))
    ours = {f.name for f in text_string_to_metric_families(scrape(ws.daemon.web.url))
            if f.name.startswith("caseflow_")}
    ours = {n + "_total" if f"{n}_total" in exported else n for n in ours}
    assert ours <= documented, ours - documented


def test_failed_attempts_give_ups_and_ssh_errors_are_counted(ws):
    """A host where nothing listens: the upload fails again and again (a transient error),
    then the engine gives up; each shows in the counters."""
    dead = free_port()
    ws.write_config(web=WEB, transport={"kind": "ssh", "name": "nowhere", "host": "127.0.0.1",
                                        "port": dead, "root": "/tmp/caseflow-nowhere",
                                        "connect_timeout": 5, "reconnect_min_interval": 0.2},
                    retry={"initial_seconds": 0.2, "max_seconds": 0.5,
                           "give_up_after_seconds": 2})
    url = ws.start().web.url
    before = scrape(url)
    ws.drop_case("unlucky")
    row = ws.wait_state("unlucky", "failure")
    assert "gave up" in row.reason
    text = scrape(url)
    for name, labels in (("caseflow_failed_attempts_total", {"step": "upload"}),
                         ("caseflow_give_ups_total", {"step": "upload"}),
                         ("caseflow_ssh_errors_total", {"host": "nowhere"})):
        assert value(text, name, **labels) > value(before, name, **labels), name
    assert value(text, "caseflow_give_ups_total", step="upload") - \
        value(before, "caseflow_give_ups_total", step="upload") == 1
    assert get_json(url, "/api/summary")["states"]["failure"] == 1
    # refused before any connection was open: none counted as opened
    assert value(text, "caseflow_ssh_connects_total", host="nowhere") == \
        value(before, "caseflow_ssh_connects_total", host="nowhere")
