"""The status page's HTML: plain pages whose tables need no script (the script only keeps
the numbers current). Every value that comes from a case, a host or a request goes through
`esc` (HTML-escaped, control characters shown as escapes like the command line shows them);
links carry case ids, never names.

Times are <time datetime="ISO 8601, UTC">, shown in the daemon's zone here (`local_time`)
and in the browser's by the script (the same form); the ISO is in each one's title.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from html import escape
from urllib.parse import urlencode

from .. import durations
from ..store import CaseRow
from ..text import plural
from ..views import Stamp, drain_parts, host_problem_parts, iso, printable, reason_parts, state_cell
from .live_tails import about_parts

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


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def local_time(t: float, now: float, zone: tzinfo | None = None) -> str:
    """A time in the daemon's zone (or `zone`) as a person reads it: "23:45:10" today, "Mon 7
    Dec 23:45:10" on another day, "Mon 7 Dec 2025 23:45:10" in another year (static/app.js
    writes the same in the browser's zone)."""
    d, today = datetime.fromtimestamp(t, zone), datetime.fromtimestamp(now, zone)
    clock = f"{d:%H:%M:%S}"
    if d.date() == today.date():
        return clock
    day = f"{DAYS[d.weekday()]} {d.day} {MONTHS[d.month - 1]}"
    return f"{day}{'' if d.year == today.year else f' {d.year}'} {clock}"


def zone_name(now: float) -> str:
    """The daemon's time zone, as the page's times are written before the script runs."""
    return datetime.fromtimestamp(now).astimezone().tzname() or "local time"


def when(t: float | None, now: float, element_id: str = "") -> str:
    """A time as a <time> element: ISO 8601 UTC in its datetime and title, the daemon's local
    time as its text."""
    if t is None:
        return "–"
    text = iso(t)
    id_attr = f' id="{element_id}"' if element_id else ""
    return f'<time{id_attr} datetime="{text}" title="{text}">{local_time(t, now)}</time>'


def when_iso(text: str | None, now: float) -> str:
    """`when` for a time given as ISO 8601 (as the JSON dicts hold them)."""
    if not text:
        return "–"
    return when(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp(), now)


def parts_html(parts: Sequence[str] | None, now: float) -> str:
    """A text made of parts (views.Stamp: a time in it) as HTML: its times as <time>."""
    if parts is None:
        return "–"
    return "".join(when_iso(p, now) if isinstance(p, Stamp) else esc(p) for p in parts)


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
        f'<p class="updated">As of {when(now, now, "updated")} · <span id="zone" '
        'title="The zone of the daemon\'s machine; point at a time to see it in UTC">'
        f"times in {esc(zone_name(now))}</span> "
        '<span id="live" class="live" hidden>· live</span></p></header>'
        f'<main id="main">{body}</main></body></html>\n'
    )


# -- cases -----------------------------------------------------------------------------------
CASE_COLUMNS = ("ID", "Name", "State", "Group", "Host", "Slot", "Age", "Time", "Reason")
# what the Time column holds (caseflow.durations: the current run's total)
TIME_TITLE = "the current run's time: so far while it is active, its time to result once it ended"


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
        state = esc(state_cell(r, now, waits))
        # (the titles: the whole text where a compact table cuts it)
        out.append(
            f'<tr data-id="{r.id}"><td><a href="/cases/{r.id}">{r.id}</a></td>'
            f'<td class="name" title="{esc(r.name)}"><a href="/cases/{r.id}">{esc(r.name)}</a></td>'
            f'<td class="state s-{esc(r.state)}" title="{state}">{state}</td>'
            f"<td>{esc(r.grp)}</td><td>{esc(r.slot_host or r.host)}</td>"
            f'<td>{slot}</td><td class="age">{age(now - r.created_at)}</td>'
            f'<td class="time">{age(totals.get(r.id))}</td>'
            f'<td class="reason" title="{esc(r.reason or r.last_error or "")}">'
            f"{parts_html(reason_parts(r), now)}</td></tr>"
        )
    return "".join(out)


def case_table(
    rows: list[CaseRow],
    now: float,
    caption: str,
    table_id: str,
    totals: dict[int, float | None],
    waits: Mapping[str, str] | None = None,
    compact: bool = False,
) -> str:
    """A table of cases; `totals`: each one's current run's time (caseflow.durations);
    `compact`: one line a case, long texts cut (their whole text in a title)."""

    def th(column: str) -> str:
        title = f' title="{esc(TIME_TITLE)}"' if column == "Time" else ""
        return f'<th scope="col"{title} class="c-{column.lower()}">{column}</th>'

    head = "".join(th(c) for c in CASE_COLUMNS)
    empty = (
        "" if rows else f'<tr class="empty"><td colspan="{len(CASE_COLUMNS)}">no cases</td></tr>'
    )
    return (
        f'<table class="cases{" compact" if compact else ""}" id="{table_id}">'
        f"<caption>{caption}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{case_rows(rows, now, totals, waits)}{empty}</tbody></table>"
    )


def problem_html(h: dict, now: float) -> str:
    """A host's problem (an /api/hosts entry) as `caseflow status` says it."""
    parts = host_problem_parts(h["problem_kind"], h["problem"], None)
    if h["since"]:
        parts[1] = Stamp(h["since"])
    return parts_html(parts, now)


def drain_html(h: dict, now: float) -> str:
    parts = drain_parts(h["drain_reason"], None, h["name"])
    if h["drain_since"]:
        parts[1] = Stamp(h["drain_since"])
    return parts_html(parts, now)


def host_banner(hosts: list[dict], now: float) -> str:
    """Every host with a problem (as `caseflow status` says it), a notice or a drain (the
    script writes the same lines from /api/summary's hosts)."""
    lines = []
    for h in hosts:
        name = f"host {esc(h['name'])}: "
        if h["problem"]:
            lines.append(f"<li>{name}{problem_html(h, now)}</li>")
        if h["notice"]:
            lines.append(f"<li>{name}{esc(h['notice'])}</li>")
        if h["drain"]:
            lines.append(f"<li>{name}{drain_html(h, now)}</li>")
    return f'<ul class="alerts" id="alerts" aria-live="polite">{"".join(lines)}</ul>'


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
        ("Reason", f'<span data-field="reason">{parts_html(reason_parts(row), now)}</span>'),
        ("Group", esc(row.grp)),
        ("Host", esc(row.slot_host or row.host)),
        (
            "Slot",
            esc(row.slot_index) + (f" (device {esc(row.slot_device)})" if row.slot_device else ""),
        ),
        ("Task", esc(row.task_id)),
        (
            "Run",
            esc(row.run)
            + (
                f" ({plural(row.reruns, 'rerun')}: the infrastructure took its job away)"
                if row.reruns
                else ""
            ),
        ),
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
        ("Detected", when(row.created_at, now)),
        ("Last change", f'<span data-field="updated">{when(row.updated_at, now)}</span>'),
        # while it waits out a backoff after a failed attempt
        ("Next attempt", f'<span data-field="next">{when(next_attempt(detail, now), now)}</span>'),
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
    timing = durations_section(row, detail, now)
    timeline = "".join(
        f'<li><span class="at">{when_iso(h["at"], now)}</span> '
        f'<span class="move">{esc(h["from"] or "(new)")} → {esc(h["to"])}</span> '
        f'<b class="trigger">{esc(h["trigger"])}</b>'
        f"{' <span class=detail>' + esc(h['detail']) + '</span>' if h['detail'] else ''}</li>"
        for h in detail["history"]
    )
    runs = ""
    if len(detail["runs"]) > 1:  # retried or rerun: how each run ended
        items = "".join(
            f"<li><b>run {r['run']}</b> {when_iso(r['began_at'], now)}: "
            + (
                f"{esc(r['ended'])} → {esc(r['to'])}"
                + (f' <span class="detail">{esc(r["detail"])}</span>' if r["detail"] else "")
                if r["ended"]
                else "going on"
            )
            + "</li>"
            for r in detail["runs"]
        )
        runs = f'<section><h2>Runs</h2><ol class="timeline" id="runs">{items}</ol></section>'
    # (the lines are clean already: escaped for HTML alone, their tabs kept)
    text = escape("\n".join(job_log["lines"]))
    log = (
        f'<p id="log-about">{parts_html(about_parts(job_log), now)}</p>'
        f'<pre class="log" id="log-text"{"" if text else " hidden"}>{text}</pre>'
    )
    body = (
        f'<h1>Case {row.id}: <span class="name" id="case-name">{esc(row.name)}</span></h1>'
        f'<div id="case" data-id="{row.id}"><dl class="fields">{dl}</dl>{progress}{timing}{runs}'
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


def durations_section(row: CaseRow, detail: dict, now: float) -> str:
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
        f'<p>The job started <span id="job-started">{when_iso(job["started"], now)}</span>, '
        f'ended <span id="job-ended">{when_iso(job["ended"], now)}</span> '
        f'(<span id="job-times-source">{esc(JOB_TIMES.get(job["source"] or ""))}</span>).'
        "</p></section>"
    )


def seconds(value: float | None) -> str:
    """A duration to the tenth of a second below 90 s, else as `age` says it."""
    if value is None:
        return "–"
    return f"{value:.1f} s" if value < 90 else age(value)


def next_attempt(detail: dict, now: float) -> float | None:
    """When a case retrying after an error tries again (None when it does not wait)."""
    if not detail["last_error"] or not detail["next_attempt_at"]:
        return None
    t = datetime.fromisoformat(detail["next_attempt_at"].replace("Z", "+00:00")).timestamp()
    return t if t > now else None


# -- hosts -----------------------------------------------------------------------------------
def host_texts(h: dict, now: float) -> str:
    """A host's problem, notice and drain, for the hosts table."""
    texts = [esc(t) for t in (h["problem"], h["notice"]) if t]
    if h["drain"]:
        texts.append(drain_html(h, now))
    return " · ".join(texts) or "–"


def hosts_page(hosts: list[dict], groups: list[dict], slots: list[dict], now: float) -> str:
    host_rows = "".join(
        f'<tr><th scope="row">{esc(h["name"])}</th><td>{esc(h["transport"])} / '
        f'{esc(h["backend"])}</td><td class="host-{esc(h["status"])}">{esc(h["status"])}</td>'
        f"<td>{when_iso(h['since'] or h['drain_since'], now)}</td>"
        f"<td>{host_texts(h, now)}</td></tr>"
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
