"""The status page's HTML: plain pages whose tables need no script (the script only keeps
the numbers current). Every value that comes from a case, a host or a request goes through
`esc` (HTML-escaped, control characters shown as escapes like the command line shows them);
links carry case ids, never names.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from urllib.parse import urlencode

from .. import durations
from ..store import CaseRow
from ..text import plural
from ..views import iso, printable, state_cell

NAV = (
    ("/", "Overview"),
    ("/cases", "Cases"),
    ("/hosts", "Hosts and slots"),
    ("/api", "JSON"),
    ("/metrics", "Metrics"),
)


def esc(value) -> str:
    """A value as HTML text or attribute content: escaped, never markup."""
    if value is None:
        return "–"
    return escape(printable(str(value)), quote=True)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{s // 60} min"
    if s < 48 * 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def size(n: int | None) -> str:
    if n is None:
        return "–"
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


def when(t: float | None) -> str:
    """A time as a <time> element (UTC, ISO 8601)."""
    if t is None:
        return "–"
    text = iso(t)
    return f'<time datetime="{text}">{text}</time>'


def page(title: str, body: str, now: float, kind: str, current: str = "/") -> str:
    mark = ' aria-current="page"'
    nav = " ".join(
        f'<a href="{href}"{mark if href == current else ""}>{label}</a>' for href, label in NAV
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · caseflow</title>"
        '<link rel="stylesheet" href="/static/style.css">'
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<script src="/static/app.js" defer></script></head>'
        f'<body data-page="{kind}"><a class="skip" href="#main">Skip to content</a>'
        f'<header><p class="brand">caseflow</p><nav aria-label="Main">{nav}</nav>'
        f'<p class="updated">As of <span id="updated">{iso(now)}</span> '
        '<span id="live" class="live" hidden>· live</span></p></header>'
        f'<main id="main">{body}</main></body></html>\n'
    )


# -- cases -----------------------------------------------------------------------------------
CASE_COLUMNS = ("ID", "Name", "State", "Group", "Host", "Slot", "Age", "Time", "Reason")
# what the Time column holds (caseflow.durations: the current run's total)
TIME_TITLE = "the current run's time: so far while it is active, its time to result once it ended"


def reason_text(row: CaseRow) -> str | None:
    if row.reason:
        return row.reason
    if row.last_error:
        return (
            f"retrying since {iso(row.failing_since)} ({plural(row.attempts, 'attempt')}): "
            f"{row.last_error}"
        )
    return None


def case_rows(
    rows: list[CaseRow],
    now: float,
    totals: dict[int, float | None],
    waits: Mapping[str, str] | None = None,
) -> str:
    out = []
    for r in rows:
        slot = (
            "–"
            if r.slot_index is None
            else f"{r.slot_index}" + (f" (device {esc(r.slot_device)})" if r.slot_device else "")
        )
        out.append(
            f'<tr data-id="{r.id}"><td><a href="/cases/{r.id}">{r.id}</a></td>'
            f'<td class="name"><a href="/cases/{r.id}">{esc(r.name)}</a></td>'
            f'<td class="state s-{esc(r.state)}">{esc(state_cell(r, now, waits))}</td>'
            f"<td>{esc(r.grp)}</td><td>{esc(r.slot_host or r.host)}</td>"
            f'<td>{slot}</td><td class="age">{age(now - r.created_at)}</td>'
            f'<td class="time">{age(totals.get(r.id))}</td>'
            f'<td class="reason">{esc(reason_text(r))}</td></tr>'
        )
    return "".join(out)


def case_table(
    rows: list[CaseRow],
    now: float,
    caption: str,
    table_id: str,
    totals: dict[int, float | None],
    waits: Mapping[str, str] | None = None,
) -> str:
    """A table of cases; `totals`: each one's current run's time (caseflow.durations)."""
    title = f' title="{esc(TIME_TITLE)}"'
    head = "".join(f'<th scope="col"{title if c == "Time" else ""}>{c}</th>' for c in CASE_COLUMNS)
    empty = (
        "" if rows else f'<tr class="empty"><td colspan="{len(CASE_COLUMNS)}">no cases</td></tr>'
    )
    return (
        f'<table class="cases" id="{table_id}"><caption>{caption}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{case_rows(rows, now, totals, waits)}{empty}</tbody>"
        "</table>"
    )


def counts_table(spec, counts: dict[str, int]) -> str:
    rows = "".join(
        f'<tr class="{"terminal" if s.terminal else "active"}"><th scope="row">'
        f'<a href="/cases?state={esc(s.name)}">{esc(s.name)}</a></th>'
        f'<td class="num" id="n-{esc(s.name)}">{counts.get(s.name, 0)}</td>'
        f"<td>{esc(s.description)}</td></tr>"
        for s in spec.states
    )
    return (
        '<table class="counts" id="counts"><caption>Cases per state</caption><thead><tr>'
        '<th scope="col">State</th><th scope="col">Cases</th><th scope="col">Meaning</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def host_banner(hosts: list[dict]) -> str:
    """Every host with a problem (as `caseflow status` says it), a notice or a drain."""
    lines = [
        f"<li>host {esc(h['name'])}: {esc(h['problem_line'])}</li>" for h in hosts if h["problem"]
    ]
    lines += [f"<li>host {esc(h['name'])}: {esc(h['notice'])}</li>" for h in hosts if h["notice"]]
    lines += [f"<li>host {esc(h['name'])}: {esc(h['drain'])}</li>" for h in hosts if h["drain"]]
    return f'<ul class="alerts" id="alerts" aria-live="polite">{"".join(lines)}</ul>'


def overview(
    spec,
    svg: str,
    counts: dict[str, int],
    hosts: list[dict],
    rows: list[CaseRow],
    total: int,
    now: float,
    totals: dict[int, float | None],
    waits: Mapping[str, str] | None = None,
) -> str:
    active = sum(n for s, n in counts.items() if s not in spec.terminal_states)
    body = (
        '<h1>Overview</h1><p class="summary" id="summary">'
        f"{plural(total, 'case')}, {active} active."
        f"</p>{host_banner(hosts)}"
        f'<figure class="diagram">{svg}<figcaption>The case machine '
        "(specs/case_machine.yaml); the numbers are the cases in each state now."
        f"</figcaption></figure>{counts_table(spec, counts)}"
        + case_table(
            rows,
            now,
            'Active cases first, then the latest ended ones (<a href="/cases">all cases</a>)',
            "recent",
            totals,
            waits,
        )
    )
    return page("Overview", body, now, "overview", "/")


def cases_page(
    spec,
    rows: list[CaseRow],
    total: int,
    state: str | None,
    search: str,
    number: int,
    pages: int,
    per_page: int,
    now: float,
    totals: dict[int, float | None],
    waits: Mapping[str, str] | None = None,
) -> str:
    options = "".join(
        f'<option value="{esc(s)}"{" selected" if s == state else ""}>{esc(s)}</option>'
        for s in spec.state_names
    )
    form = (
        '<form class="filter" method="get" action="/cases" role="search">'
        '<label for="state">State</label> <select id="state" name="state">'
        f'<option value="">all</option>{options}</select> '
        '<label for="q">Name contains</label> '
        f'<input id="q" name="q" type="search" value="{esc(search)}"> '
        '<button type="submit">Show</button></form>'
    )

    def link(n: int, text: str, rel: str) -> str:
        query = urlencode(
            {k: v for k, v in (("state", state or ""), ("q", search), ("page", str(n))) if v}
        )
        return f'<a href="/cases?{esc(query)}" rel="{rel}">{text}</a>'

    nav = [
        f'<span id="pageinfo">page {number} of {pages}, {total} '
        f"case{'' if total == 1 else 's'}</span>"
    ]
    if number > 1:
        nav.insert(0, link(number - 1, "← previous", "prev"))
    if number < pages:
        nav.append(link(number + 1, "next →", "next"))
    pager = f'<nav class="pager" aria-label="Pages">{" · ".join(nav)}</nav>'
    caption = (
        f"Cases{' in state ' + esc(state) if state else ''}"
        f"{' whose name contains “' + esc(search) + '”' if search else ''}, newest first"
    )
    body = (
        f"<h1>Cases</h1>{form}{pager}"
        f'<div data-state="{esc(state or "")}" data-q="{esc(search)}" data-page="{number}" '
        f'data-per-page="{per_page}" id="cases-query">'
        f"{case_table(rows, now, caption, 'cases', totals, waits)}</div>{pager}"
    )
    return page("Cases", body, now, "cases", "/cases")


def case_page(row: CaseRow, detail: dict, job_log: dict, now: float) -> str:
    """One case; `job_log` is its log's last lines as /api/cases/ID/log gives them."""
    upload = detail.get("upload")
    fields = [
        ("State", f'<span data-field="state">{esc(detail["state_text"])}</span>'),
        ("Reason", f'<span data-field="reason">{esc(reason_text(row))}</span>'),
        ("Group", esc(row.grp)),
        ("Host", esc(row.slot_host or row.host)),
        (
            "Slot",
            esc(row.slot_index) + (f" (device {esc(row.slot_device)})" if row.slot_device else ""),
        ),
        ("Task", esc(row.task_id)),
        ("Run", esc(row.run)),
        ("Files", f"{esc(row.file_count)}, {size(row.size_bytes)}"),
        ("Exit code", esc(row.exit_code)),
        (
            "Results",
            esc(detail["results"])
            if detail["results"]
            else (
                f"being fetched into {esc(row.results_path)}"
                if row.results_path and row.job_outcome
                else "–"
            ),
        ),
        ("Case folder", esc(row.local_path)),
        ("Remote folder", esc(row.remote_path)),
        ("Wrap-up", esc(detail["wrapup"] or row.wrapup_note)),
        ("Detected", when(row.created_at)),
        ("Last change", when(row.updated_at)),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in fields)
    progress = ""
    if upload:
        rate = (
            f"{size(upload['rate_bytes_per_second'])}/s" if upload["rate_bytes_per_second"] else "–"
        )
        left = age(upload["seconds_left"]) if upload["seconds_left"] is not None else "–"
        progress = (
            f'<section id="upload"><h2>Upload</h2><p><progress max="{upload["total"]}" '
            f'value="{upload["bytes"]}">{upload["percent"]} %</progress> '
            f'<span id="upload-text">{size(upload["bytes"])} of {size(upload["total"])} '
            f"({upload['percent']} %), {rate}, {left} left</span></p></section>"
        )
    timing = durations_section(row, detail)
    timeline = "".join(
        f'<li><span class="at">{when_iso(h["at"])}</span> '
        f'<span class="move">{esc(h["from"] or "(new)")} → {esc(h["to"])}</span> '
        f'<b class="trigger">{esc(h["trigger"])}</b>'
        f"{' <span class=detail>' + esc(h['detail']) + '</span>' if h['detail'] else ''}</li>"
        for h in detail["history"]
    )
    # (the lines are clean already: escaped for HTML alone, their tabs kept)
    text = escape("\n".join(job_log["lines"]))
    log = (
        f'<p id="log-about">{esc(job_log["about"])}</p>'
        f'<pre class="log" id="log-text"{"" if text else " hidden"}>{text}</pre>'
    )
    body = (
        f'<h1>Case {row.id}: <span class="name" id="case-name">{esc(row.name)}</span></h1>'
        f'<div id="case" data-id="{row.id}"><dl class="fields">{dl}</dl>{progress}{timing}'
        f'<section><h2>History</h2><ol class="timeline" id="history">{timeline}</ol>'
        f'</section><section id="log" data-live="{str(job_log["live"]).lower()}">'
        f"<h2>Job log</h2>{log}</section>"
        f'<p><a href="/api/cases/{row.id}">This case as JSON</a></p></div>'
    )
    return page(f"Case {row.id}", body, now, "case", "")


# where the job's start and end came from (`job_times.source`; the same words in app.js)
JOB_TIMES = {
    durations.QUEUE: "as its queue reported them",
    durations.OBSERVED: "as caseflow's polls saw them",
    durations.UNKNOWN: "not known: the case is from an older caseflow",
}


def durations_section(row: CaseRow, detail: dict) -> str:
    """The durations of the case's current run: a row per phase, then the total (the page's
    script keeps the numbers current: `data-phase`)."""
    found, job = detail["durations"], detail["job_times"]
    rows = "".join(
        f'<tr><th scope="row">{esc(key.replace("_", " "))}</th>'
        f'<td class="num" data-phase="{key}">{seconds(found[key])}</td></tr>'
        for key in durations.KEYS
    )
    return (
        f'<section id="durations"><h2>Durations (run {esc(row.run)})</h2>'
        '<table class="durations"><caption>Time spent in each phase; a phase in progress '
        f"counts up to now</caption><tbody>{rows}</tbody></table>"
        f'<p>The job started <span id="job-started">{esc(job["started"])}</span>, ended '
        f'<span id="job-ended">{esc(job["ended"])}</span> '
        f'(<span id="job-times-source">{esc(JOB_TIMES.get(job["source"] or ""))}</span>).'
        "</p></section>"
    )


def seconds(value: float | None) -> str:
    """A duration to the tenth of a second below 90 s, else as `age` says it."""
    if value is None:
        return "–"
    return f"{value:.1f} s" if value < 90 else age(value)


def when_iso(text: str | None) -> str:
    return f'<time datetime="{esc(text)}">{esc(text)}</time>' if text else "–"


# -- hosts -----------------------------------------------------------------------------------
def hosts_page(hosts: list[dict], groups: list[dict], slots: list[dict], now: float) -> str:
    host_rows = "".join(
        f'<tr><th scope="row">{esc(h["name"])}</th><td>{esc(h["transport"])} / '
        f'{esc(h["backend"])}</td><td class="host-{esc(h["status"])}">{esc(h["status"])}</td>'
        f"<td>{esc(h['since'])}</td>"
        f"<td>{esc(' · '.join(t for t in (h['problem'], h['notice'], h['drain']) if t) or None)}"
        "</td></tr>"
        for h in hosts
    )
    group_rows = "".join(
        f'<tr><td>{esc(g["host"])}</td><td>{esc(g["group"])}</td><td class="num">'
        f'{g["in_use"]}</td><td class="num">{g["free"]}</td><td class="num">{g["slots"]}</td></tr>'
        for g in groups
    )
    slot_rows = "".join(
        f'<tr><td>{esc(s["host"])}</td><td>{esc(s["group"])}</td><td class="num">{s["slot"]}</td>'
        f"<td>{esc(s['device'])}</td><td>"
        + (
            f'<a href="/cases/{s["case_id"]}">{s["case_id"]} {esc(s["case_name"])}</a>'
            if s["case_id"]
            else "free"
        )
        + f"</td><td>{esc(s['case_state'])}</td><td>{'retired' if s['retired'] else ''}</td></tr>"
        for s in slots
    )
    body = (
        "<h1>Hosts and slots</h1>"
        '<table id="hosts"><caption>Hosts</caption><thead><tr><th scope="col">Host</th>'
        '<th scope="col">Transport / queue</th><th scope="col">Status</th>'
        '<th scope="col">Since</th><th scope="col">Problem or notice</th></tr></thead>'
        f"<tbody>{host_rows}</tbody></table>"
        '<table id="groups"><caption>Slots per group</caption><thead><tr>'
        '<th scope="col">Host</th><th scope="col">Group</th><th scope="col">In use</th>'
        '<th scope="col">Free</th><th scope="col">Slots</th></tr></thead>'
        f"<tbody>{group_rows}</tbody></table>"
        '<table id="slots"><caption>Slots</caption><thead><tr><th scope="col">Host</th>'
        '<th scope="col">Group</th><th scope="col">Slot</th><th scope="col">Device</th>'
        '<th scope="col">Case</th><th scope="col">State</th><th scope="col">Note</th></tr>'
        f"</thead><tbody>{slot_rows}</tbody></table>"
    )
    return page("Hosts and slots", body, now, "hosts", "/hosts")


def message(status: int, title: str, text: str, now: float) -> str:
    return page(title, f"<h1>{esc(title)}</h1><p>{esc(text)}</p>", now, "message", "")
