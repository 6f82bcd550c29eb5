"""The overview page (`/`), in the order a person needs it: how many cases in each state (one
line), what needs a person (the hosts' banner, then short lists of cases: web.attention),
the cases (active first), and last the case machine with its numbers. Its first screen
(1400×1000) holds the first three; the script (static/app.js) keeps all of it current from
/api/summary and /api/cases.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..store import CaseRow
from ..text import plural
from ..views import state_cell
from . import pages
from .attention import RECENT_HOURS, STUCK_HOURS, Attention
from .pages import age, esc, host_banner, when

CASES = 20  # in the overview's case list
CALM = (
    "Nothing needs you: every host answers and takes work; no case failed in the last "
    f"{RECENT_HOURS} h, none is retrying after errors, waiting for a host or stuck."
)


def chips(spec, counts: dict[str, int]) -> str:
    """Cases per state on one line, each a link to the cases in it (the state's meaning in
    its title)."""
    return "".join(
        f'<a class="chip s-{esc(s.name)}{"" if counts.get(s.name) else " none"}" '
        f'href="/cases?state={esc(s.name)}" title="{esc(s.description)}">{esc(s.name)} '
        f'<span class="count" id="n-{esc(s.name)}">{counts.get(s.name, 0)}</span></a>'
        for s in spec.states
    )


def _item(r: CaseRow, what: str, title: str | None) -> str:
    """One case of a list: its id and name (a link), then what to know, on one line."""
    return (
        f'<li title="{esc(title or "")}"><a href="/cases/{r.id}">{r.id} {esc(r.name)}</a> '
        f'<span class="what">{what}</span></li>'
    )


def _section(key: str, heading: str, total: int, items: list[str]) -> str:
    more = len(items) < total
    return (
        f'<section class="attn" id="attn-{key}"{"" if total else " hidden"}>'
        f"<h3>{heading}</h3><ul>{''.join(items)}</ul>"
        f'<p class="more"{"" if more else " hidden"}>and {total - len(items)} more</p></section>'
    )


def attention_html(
    needs: Attention, hosts: list[dict], now: float, waits: Mapping[str, str]
) -> str:
    failed_links = ", ".join(
        f'<a href="/cases?state={esc(s)}">{n} {esc(s)}</a>'
        for s, n in needs.failed_states.items()
        if n
    )
    # (what went wrong first: the end of a long line is cut)
    failed = [
        _item(r, f"{esc(r.reason)} ({esc(r.state)}, {when(r.updated_at, now)})", r.reason)
        for r in needs.failed
    ]
    retrying = [
        _item(
            r,
            f"{esc(r.last_error)} ({esc(r.state)}, {plural(r.attempts, 'attempt')} since "
            f"{when(r.failing_since, now)})",
            r.last_error,
        )
        for r in needs.retrying
    ]
    waiting = [
        _item(r, esc(text), text) for r in needs.waiting for text in [state_cell(r, now, waits)]
    ]
    stuck = [
        _item(
            r,
            f"{esc(r.state)} since {when(r.updated_at, now)} ({age(now - r.updated_at)})",
            state_cell(r, now, waits),
        )
        for r in needs.stuck
    ]
    troubled = any(h["problem"] or h["notice"] or h["drain"] for h in hosts)
    return (
        '<section id="attention" aria-labelledby="attention-title">'
        '<h2 id="attention-title">Needs attention</h2>'
        f'<p class="calm" id="calm"{"" if needs.nothing and not troubled else " hidden"}>'
        f"{CALM}</p>{host_banner(hosts, now)}"
        '<div class="attn-lists">'
        + _section(
            "failed",
            f'Failed in {RECENT_HOURS} h: <span class="n">{failed_links}</span>',
            needs.failed_total,
            failed,
        )
        + _section(
            "retrying",
            f'Retrying after errors: <span class="n">{needs.retrying_total}</span>',
            needs.retrying_total,
            retrying,
        )
        + _section(
            "waiting",
            f'Waiting for a host: <span class="n">{needs.waiting_total}</span>',
            needs.waiting_total,
            waiting,
        )
        + _section(
            "stuck",
            f'No change for {STUCK_HOURS} h or more: <span class="n">{needs.stuck_total}</span>',
            needs.stuck_total,
            stuck,
        )
        + "</div></section>"
    )


def page(
    spec,
    svg: str,
    counts: dict[str, int],
    hosts: list[dict],
    needs: Attention,
    rows: list[CaseRow],
    total: int,
    now: float,
    waits: Mapping[str, str],
    totals: dict[int, float | None],
) -> str:
    """The overview; `totals`: each listed case's current run's time (the Time column)."""
    active = sum(n for s, n in counts.items() if s not in spec.terminal_states)
    body = (
        '<h1>Overview</h1><p class="summary"><span id="summary">'
        f"{plural(total, 'case')}, {active} active.</span> "
        f'<span class="chips" id="chips">{chips(spec, counts)}</span></p>'
        + attention_html(needs, hosts, now, waits)
        + pages.case_table(
            rows,
            now,
            "Cases: the active ones (oldest first), then the latest ended ones "
            '(<a href="/cases">all cases</a>)',
            "recent",
            totals,
            waits,
            compact=True,
        )
        + '<section id="machine" aria-labelledby="machine-heading">'
        '<h2 id="machine-heading">The case machine</h2>'
        f'<figure class="diagram">{svg}<figcaption>As specs/case_machine.yaml defines it; the '
        "numbers are the cases in each state now (point at a state for what it means)."
        "</figcaption></figure></section>"
    )
    return pages.page("Overview", body, now, "overview", "/")
