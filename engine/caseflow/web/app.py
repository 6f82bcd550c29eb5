"""What each address of the status page answers: HTML pages, their JSON twins, /metrics and
the files of static/. Only GET (and HEAD); only the addresses listed in `App.route`; static
files are looked up by name in the package's own list, never joined to a path from the
request.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, exposition, generate_latest

from .. import durations, metrics
from ..core.case_model import job_log_path
from ..errors import UNREACHABLE
from ..store.reader import StatusReader
from ..views import (
    case_detail,
    case_json,
    drain_text,
    group_hosts,
    host_problem_text,
    host_waits,
    iso,
    log_tail,
    problem_head,
    slot_json,
)
from . import machine_svg, overview, pages
from .attention import attention
from .live_tails import LiveTails, about_parts

PER_PAGE = 50  # cases per HTML page
LOG_LINES = 30  # of a job's log on a case's page
MAX_PER_PAGE = 1000  # per JSON page
# the classic text format, which every Prometheus 2.x reads (Debian 12 has 2.42); newer
# prometheus_client announce version 1.0.0, whose only change is UTF-8 names (not ours)
METRICS_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", CONTENT_TYPE_LATEST)
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
API = {
    "/api/summary": "cases per state; per group of the active states; the hosts and their "
    "slots per group; what needs a person (the page asks for it every second)",
    "/api/cases": "cases as `caseflow status --json` lists them, a page at a time: ?state=S "
    "&q=TEXT (name contains) &page=N &per_page=N (at most 1000) "
    "&order=active (active ones oldest first, then ended ones newest first)",
    "/api/cases/ID": "one case as `caseflow show --json` prints it",
    "/api/cases/ID/log": "the last lines of the case's job log: while its job may run, read "
    "on the host (at most once per case every few seconds, however many ask); else the log "
    "kept when it ended (the page asks for it every second)",
    "/api/hosts": "the hosts, slots per group, and each slot as `caseflow resources --json`",
    "/metrics": "Prometheus metrics",
}


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"


class BadRequest(Exception):
    pass


def _static_files() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("caseflow.web") / "static"
    out = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            out[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return out


class App:
    def __init__(self, config, spec, engine=None, clock=time.time):
        self.config = config
        self.spec = spec
        self.engine = engine
        self.clock = clock
        self.reader = StatusReader(config.database)
        self.static = _static_files()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(metrics.StoreCollector(self.reader, spec, config, engine, clock))
        self.registry.register(_Forward(metrics.REGISTRY))
        metrics.declare(config, spec)
        self.live = LiveTails(engine, LOG_LINES, clock) if engine is not None else None
        self.job_states = set(spec.job_states)

    def close(self) -> None:
        self.reader.close()

    # -- routing -------------------------------------------------------------------------
    def route(self, target: str) -> Response:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        now = self.clock()
        try:
            if path == "/":
                return self.overview(now)
            if path == "/cases":
                return self.cases(query, now)
            if m := re.fullmatch(r"/cases/([0-9]{1,18})", path):
                return self.case(int(m.group(1)), now)
            if path == "/hosts":
                return Response(200, pages.hosts_page(*self.hosts_data(now), now).encode())
            if path == "/api":
                return self.json({"endpoints": API})
            if path == "/api/summary":
                return self.json(self.summary(now))
            if path == "/api/cases":
                return self.json(self.cases_json(query, now))
            if m := re.fullmatch(r"/api/cases/([0-9]{1,18})", path):
                return self.case_json(int(m.group(1)), now)
            if m := re.fullmatch(r"/api/cases/([0-9]{1,18})/log", path):
                row = self.reader.case(int(m.group(1)))
                if row is None:
                    return self.json({"error": f"no case {m.group(1)}"}, 404)
                return self.json(self.job_log(row))
            if path == "/api/hosts":
                hosts, groups, slots = self.hosts_data(now)
                return self.json({"hosts": hosts, "groups": groups, "slots": slots})
            if path == "/metrics":
                return Response(200, generate_latest(self.registry), METRICS_TYPE)
            if m := re.fullmatch(r"/static/([A-Za-z0-9_-]+\.[a-z]+)", path):
                if m.group(1) in self.static:
                    body, kind = self.static[m.group(1)]
                    return Response(200, body, kind)
        except BadRequest as exc:
            return self.error(400, "Bad request", str(exc), path, now)
        return self.error(404, "Not found", "There is nothing at this address.", path, now)

    def error(self, status: int, title: str, text: str, path: str, now: float) -> Response:
        if path.startswith("/api/") or path == "/metrics":
            return self.json({"error": text}, status)
        return Response(status, pages.message(status, title, text, now).encode())

    @staticmethod
    def json(data, status: int = 200) -> Response:
        return Response(
            status,
            json.dumps(data, indent=1, ensure_ascii=False).encode(),
            "application/json; charset=utf-8",
        )

    # -- queries shared by pages and JSON ------------------------------------------------
    def _filters(self, query) -> tuple[str | None, str, int, int]:
        state = (query.get("state") or [""])[0] or None
        if state is not None and state not in self.spec.state_names:
            raise BadRequest(
                f"unknown state {state!r}; states: " + ", ".join(self.spec.state_names)
            )
        search = (query.get("q") or [""])[0][:200]
        try:
            number = int((query.get("page") or ["1"])[0])
            per_page = int((query.get("per_page") or [str(PER_PAGE)])[0])
        except ValueError:
            raise BadRequest("page and per_page must be whole numbers") from None
        if number < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            raise BadRequest(f"page must be at least 1, per_page between 1 and {MAX_PER_PAGE}")
        return state, search, number, per_page

    def _page(self, query, per_page: int | None = None):
        state, search, number, asked = self._filters(query)
        per_page = per_page or asked
        order = (query.get("order") or [""])[0]
        if order not in ("", "active"):
            raise BadRequest("order must be active or left out (newest first)")
        total, rows = self.reader.page(
            [state] if state else None,
            search,
            (number - 1) * per_page,
            per_page,
            self.spec.terminal_states if order else None,
        )
        pages_count = max(1, -(-total // per_page))
        return state, search, number, per_page, pages_count, total, rows

    def counts(self) -> tuple[dict[str, int], dict[str, dict[str, int]], int]:
        """Cases per state; per group and state of the active states (what waits and runs
        where); how many of them wait out a backoff. Quick: the page asks every second."""
        states = {s: 0 for s in self.spec.state_names}
        states.update(self.reader.state_counts())
        groups: dict[str, dict[str, int]] = {}
        retrying = 0
        for c in self.reader.counts(self.spec.active_states):
            per = groups.setdefault(c.group or "", {})
            per[c.state] = per.get(c.state, 0) + c.cases
            retrying += c.retrying
        return states, groups, retrying

    def summary(self, now: float) -> dict:
        states, groups, retrying = self.counts()
        hosts, slot_groups, _ = self.hosts_data(now)
        waits = self.waits()
        needs = attention(self.reader, self.spec, waits, now)
        return {
            "at": iso(now),
            "total": sum(states.values()),
            "states": states,
            "groups": groups,
            "retrying": retrying,
            "hosts": hosts,
            "slots": slot_groups,
            "attention": needs.json(now, waits, self.reader.histories(r.id for r in needs.rows)),
        }

    def hosts_data(self, now: float) -> tuple[list[dict], list[dict], list[dict]]:
        stored = {h.name: h for h in self.reader.hosts()}
        hosts = []
        for cfg in self.config.hosts:
            row = stored.get(cfg.name)
            live = self.engine.hosts.get(cfg.name) if self.engine is not None else None
            paused = bool(row and row.paused)
            drained = bool(row and row.drain)
            down = bool(live is not None and live.down) or bool(
                row and row.problem and row.kind == UNREACHABLE
            )
            problem = row.problem if row and row.problem else None
            hosts.append(
                {
                    "name": cfg.name,
                    "transport": cfg.transport.kind,
                    "backend": cfg.backend.kind,
                    "status": "paused"
                    if paused
                    else "unreachable"
                    if down
                    else "drained"
                    if drained
                    else "disk_low"
                    if problem
                    else "up",
                    "problem": problem,
                    "problem_kind": row.kind if row and problem else None,
                    "problem_head": problem_head(row.kind) if row and problem else None,
                    # what `caseflow status` prints for it (the page's banner)
                    "problem_line": host_problem_text(row.kind, problem, row.since)
                    if row and problem
                    else None,
                    "since": iso(row.since) if row and problem else None,
                    "paused_since": iso(row.since) if paused and row else None,
                    "free_bytes": live.free_bytes if live is not None else None,
                    "notice": row.notice if row else None,
                    "drain": drain_text(row.drain, row.drain_since, cfg.name)
                    if drained and row and row.drain
                    else None,
                    "drain_reason": row.drain if drained and row else None,
                    "drain_since": iso(row.drain_since) if drained and row else None,
                    # a host that does not answer is probed until it does
                    "probing": down,
                }
            )
        slots = [slot_json(s) for s in self.reader.slots()]
        per: dict[tuple[str, str], dict] = {}
        for s in slots:
            g = per.setdefault(
                (s["host"], s["group"]),
                {"host": s["host"], "group": s["group"], "slots": 0, "in_use": 0, "free": 0},
            )
            g["slots"] += 1
            g["in_use" if s["case_id"] is not None else "free"] += 1
        return hosts, list(per.values()), slots

    # -- pages -----------------------------------------------------------------------------
    def overview(self, now: float) -> Response:
        states, _, _ = self.counts()
        hosts, _, _ = self.hosts_data(now)
        waits = self.waits()
        total, rows = self.reader.page(limit=overview.CASES, active_first=self.spec.terminal_states)
        svg = machine_svg.render(self.spec, states)
        needs = attention(self.reader, self.spec, waits, now)
        html = overview.page(
            self.spec, svg, states, hosts, needs, rows, total, now, waits, self.totals(rows, now)
        )
        return Response(200, html.encode())

    def waits(self) -> dict[str, str]:
        """Why the cases of a host that cannot take work now wait (views.host_waits)."""
        return host_waits(self.reader.hosts(), group_hosts(self.config))

    def totals(self, rows, now: float) -> dict[int, float | None]:
        """Each case's current run's time (the Time column)."""
        histories = self.reader.histories(r.id for r in rows)
        return {
            r.id: durations.of_case(r, histories[r.id], now, self.spec)[durations.TOTAL]
            for r in rows
        }

    def cases(self, query, now: float) -> Response:
        state, search, number, per_page, count, total, rows = self._page(query, PER_PAGE)
        return Response(
            200,
            pages.cases_page(
                self.spec,
                rows,
                total,
                state,
                search,
                number,
                count,
                per_page,
                now,
                self.totals(rows, now),
                self.waits(),
            ).encode(),
        )

    def cases_json(self, query, now: float) -> dict:
        state, search, number, per_page, count, total, rows = self._page(query)
        histories = self.reader.histories(r.id for r in rows)  # for the durations
        waits = self.waits()
        return {
            "total": total,
            "page": number,
            "pages": count,
            "per_page": per_page,
            "cases": [case_json(r, now=now, history=histories[r.id], waits=waits) for r in rows],
        }

    def _detail(self, case_id: int, now: float):
        row = self.reader.case(case_id)
        if row is None:
            return None, None
        return row, case_detail(
            self.config.database, row, self.reader.history(case_id), now, self.waits()
        )

    def case(self, case_id: int, now: float) -> Response:
        row, detail = self._detail(case_id, now)
        if row is None:
            return self.error(404, "Not found", f"There is no case {case_id}.", "/cases", now)
        return Response(200, pages.case_page(row, detail, self.job_log(row), now).encode())

    def job_log(self, row) -> dict:
        """The last lines of the case's job log (/api/cases/ID/log): while its job may run,
        as the daemon read them on the host last (LiveTails); else the log kept when it ended.
        Control characters are escapes (job_output.clean), as `caseflow logs` shows them."""
        out = {"case_id": row.id, "run": row.run, "live": False, "source": None, "size": None}
        if self.live is not None and row.state in self.job_states:
            tail = self.live.tail(row)
            out.update(live=True, source=tail.source, size=tail.size, read_at=iso(tail.read_at))
            out.update(lines=list(tail.lines), problem=tail.problem)
        else:
            path = job_log_path(self.config.database, row)
            lines, log_size = log_tail(path, LOG_LINES)
            out.update(read_at=None, lines=lines, problem=None)
            if log_size is not None:
                out.update(source=str(path), size=log_size)
        out["about"] = "".join(about_parts(out))
        return out

    def case_json(self, case_id: int, now: float) -> Response:
        row, detail = self._detail(case_id, now)
        if row is None:
            return self.json({"error": f"no case {case_id}"}, 404)
        return self.json(detail)


class _Forward:
    """The process's own counters (metrics.REGISTRY) next to the store's, in one scrape."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        return self.registry.collect()
