"""The `caseflow` command line.

Exit codes: 0 done, 1 a failure (unknown case, refused request, daemon already
running, ...), 2 bad configuration or usage. Errors go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .config import config_path_from, load_config, permission_warnings
from .daemon import Daemon, DaemonLock
from .diagram import FORMATS, render
from .case_model import job_log_path
from .engine import Engine
from .errors import AlreadyRunning, CaseflowError, ConfigError
from .machine import CaseMachine
from .spec import load_spec
from .store import CaseRow, Store

log = logging.getLogger("caseflow")


class UsageError(CaseflowError):
    pass


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def printable(text: str | None) -> str:
    """A name as it can be shown on one terminal line (control characters escaped)."""
    if text is None:
        return "-"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def case_json(row: CaseRow) -> dict:
    return {"id": row.id, "name": row.name, "state": row.state, "group": row.grp,
            "slot": row.slot_index, "device": row.slot_device, "task_id": row.task_id,
            "host": row.slot_host or row.host, "remote_path": row.remote_path, "local_path": row.local_path,
            "reason": row.reason, "last_error": row.last_error, "attempts": row.attempts,
            "failing_since": _iso(row.failing_since),
            "run": row.run, "priority": row.priority, "request": row.request,
            "file_count": row.file_count,
            "progress_bytes": row.progress_bytes, "progress_total": row.progress_total,
            "queue_status": row.queue_status,
            "exit_code": row.exit_code,
            "job_outcome": row.job_outcome,
            "results": row.results_path if row.results_fetched else None,
            "wrapup": "pending" if row.wrapup else None,
            "wrapup_note": row.wrapup_note,
            "size_bytes": row.size_bytes, "next_attempt_at": _iso(row.next_attempt_at),
            "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at)}


def _progress(row: CaseRow) -> str:
    if row.progress_total:
        return f" ({100 * (row.progress_bytes or 0) // row.progress_total}% sent)"
    return ""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _open(args) -> tuple:
    config = load_config(config_path_from(args.config))
    store = Store(config.database)
    if not config.database.exists():
        raise CaseflowError(f"no database at {config.database} yet: start `caseflow run` first")
    store.migrate()
    return config, store


def resolve(store: Store, ref: str) -> CaseRow:
    rows = store.find(ref)
    if not rows:
        raise CaseflowError(f"no case with id or name {ref!r}")
    if len(rows) > 1:
        ids = ", ".join(str(r.id) for r in rows)
        raise CaseflowError(f"{ref!r} names {len(rows)} cases (ids {ids}); give the id")
    return rows[0]


# -- commands ------------------------------------------------------------------------------
def cmd_run(args) -> int:
    config = load_config(config_path_from(args.config))
    setup_logging(config.log_level, config.log_file)
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    return daemon.run()


def cmd_status(args) -> int:
    config, store = _open(args)
    spec = load_spec()
    if args.state and args.state not in spec.state_names:
        raise UsageError(f"--state: unknown state {args.state!r}; states: "
                         + ", ".join(spec.state_names))
    rows = store.cases([args.state] if args.state else None)
    if not args.json:
        for name, problem, since in store.host_problems():
            print(f"host {name}: work PAUSED since {_iso(since)}: {problem}")
        for name, notice in store.host_notices():
            print(f"host {name}: {notice}")
    if args.json:
        print(json.dumps([case_json(r) for r in rows], indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no cases")
        return 0
    table = [[str(r.id), printable(r.name), r.state + _progress(r) +
              (f" ({r.queue_status})" if r.queue_status and r.queue_status != "running" else "") +
              (f" (job ended: {r.job_outcome}; fetching results)" if r.job_outcome and
               r.state not in spec.terminal_states else "") +
              (" (stopping its job before it fails)" if r.reason and not r.job_outcome and
               r.state not in spec.terminal_states else "") +
              (" (its job is being stopped; it keeps its slot until then)" if r.slot_index
               is not None and r.state in spec.terminal_states else "") +
              (f" ({r.request} requested)" if r.request else ""),
              r.grp or "-", r.slot_host or r.host or "-",
              "-" if r.slot_index is None else str(r.slot_index), r.task_id or "-", _iso(r.updated_at) or "-",
              printable(r.reason or (f"retrying since {_iso(r.failing_since)} "
                                     f"({r.attempts} attempts): {r.last_error}"
                                     if r.last_error else None))]
             for r in rows]
    print(_table(["ID", "NAME", "STATE", "GROUP", "HOST", "SLOT", "TASK", "UPDATED", "REASON"],
                 table))
    return 0


def cmd_show(args) -> int:
    config, store = _open(args)
    row = resolve(store, args.case)
    history = store.history(row.id)
    if args.json:
        out = case_json(row)
        log_file = job_log_path(config.database, row)
        out["job_log"] = str(log_file) if log_file.exists() else None
        out["history"] = [{"from": h.src, "to": h.dst, "trigger": h.trigger, "at": _iso(h.at),
                           "detail": h.detail} for h in history]
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    for key, value in case_json(row).items():
        print(f"{key + ':':17} {printable(value if value is None else str(value))}")
    if row.results_fetched and row.results_path:
        print(f"\nresults are in {printable(row.results_path)}")
    elif row.results_path and row.job_outcome:
        print(f"\nresults are being fetched into {printable(row.results_path)}")
    log_file = job_log_path(config.database, row)
    if log_file.exists():
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        print(f"\njob log ({log_file}), last {min(10, len(lines))} of {len(lines)} lines:")
        for line in lines[-10:]:
            print(f"  {printable(line)}")
    print("\nhistory:")
    print(_table(["AT", "FROM", "TO", "TRIGGER", "DETAIL"],
                 [[_iso(h.at), h.src or "-", h.dst, h.trigger, printable(h.detail)]
                  for h in history]))
    return 0


def cmd_resources(args) -> int:
    config, store = _open(args)
    slots = store.slots()
    if args.json:
        print(json.dumps([{"host": s.host, "group": s.grp, "slot": s.idx, "device": s.device,
                           "case_id": s.case_id, "case_name": s.case_name,
                           "case_state": s.case_state, "retired": s.retired} for s in slots],
                         indent=2, ensure_ascii=False))
        return 0
    print(_table(["HOST", "GROUP", "SLOT", "DEVICE", "CASE", "STATE", "NOTE"],
                 [[s.host or "-", s.grp, str(s.idx), s.device or "-",
                   f"{s.case_id} {printable(s.case_name)}" if s.case_id else "free",
                   s.case_state or "-", "retired" if s.retired else ""] for s in slots]))
    return 0


def cmd_request(args) -> int:
    """retry / cancel: recorded in the store; the daemon applies it (or we do, if none runs)."""
    trigger = args.command
    config, store = _open(args)
    spec = load_spec()
    machine = CaseMachine(spec)
    row = resolve(store, args.case)
    if not machine.allowed(trigger, row.state):
        raise CaseflowError(f"case {row.id} {printable(row.name)!s} is {row.state}; {trigger} "
                            f"applies to: {', '.join(machine.states_allowing(trigger))}")
    store.set_request(row.id, trigger)
    lock = DaemonLock(config.database)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"{trigger} of case {row.id} requested; the running daemon (pid {exc.pid}) "
              "applies it at its next tick")
        if args.no_wait:
            return 0
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            now = store.get(row.id)
            if now.request is None:
                return _report(trigger, now, row.state)
            time.sleep(0.2)
        print(f"not applied within {args.wait:.0f} s; it stays requested", file=sys.stderr)
        return 1
    try:
        engine = Engine(config, spec=spec, store=store)
        engine.start(workers=False)
        engine.apply_request(store.get(row.id))
        engine.shutdown()
    finally:
        lock.release()
    return _report(trigger, store.get(row.id), row.state)


def _report(trigger: str, row: CaseRow, before: str) -> int:
    if row.request is not None or row.state == before:
        print(f"case {row.id}: {trigger} could not be applied yet"
              + (f": {row.last_error}" if row.last_error else ""), file=sys.stderr)
        return 1
    print(f"case {row.id} {printable(row.name)}: {before} -> {row.state}"
          + (f" ({row.reason})" if row.reason else ""))
    return 0


def cmd_check(args) -> int:
    from .check import Line, check_host
    config = load_config(config_path_from(args.config))
    ok = True
    local = [Line(False, w) for w in permission_warnings(config)]
    if local:
        print("this machine")
        for line in local:
            print(line)
        ok = False
    for host in config.hosts:
        title, lines = check_host(host)
        print(title)
        for line in lines:
            print(line)
        ok = ok and all(line.ok for line in lines)
    print("all checks passed" if ok else "some checks failed")
    return 0 if ok else 1


def cmd_diagram(args) -> int:
    out = render(load_spec(), args.format)
    if args.output:
        Path(args.output).write_bytes(out if isinstance(out, bytes) else out.encode())
    elif isinstance(out, bytes):
        sys.stdout.buffer.write(out)
    else:
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return 0


# -- plumbing ------------------------------------------------------------------------------
def setup_logging(level: str = "INFO", file: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.WARNING)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"caseflow: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="config file (default: $CASEFLOW_CONFIG)")
    p = _Parser(prog="caseflow", description="Ferries compute cases from an inbox folder to a "
                                             "GPU host's queue.")
    p.add_argument("--version", action="version", version=f"caseflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    s = sub.add_parser("status", parents=[common], help="list cases")
    s.add_argument("--json", action="store_true")
    s.add_argument("--state", help="only cases in this state")
    s = sub.add_parser("show", parents=[common], help="one case and its history")
    s.add_argument("case", help="case id or unique name")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("resources", parents=[common], help="GPU slots and who holds them")
    s.add_argument("--json", action="store_true")
    for name, text in (("retry", "run a failed or lost case again"),
                       ("cancel", "stop a case (kills its job if one runs)")):
        s = sub.add_parser(name, parents=[common], help=text)
        s.add_argument("case", help="case id or unique name")
        s.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                       help="how long to wait for a running daemon to apply it (default 60)")
        s.add_argument("--no-wait", action="store_true", help="only record the request")
    sub.add_parser("check", parents=[common],
                   help="check the host: connection, host key, remote root, tools")
    s = sub.add_parser("diagram", help="export the case state machine")
    s.add_argument("--format", choices=FORMATS, default="mermaid")
    s.add_argument("-o", "--output", help="write to this file instead of stdout")
    return p


COMMANDS = {"run": cmd_run, "status": cmd_status, "show": cmd_show, "resources": cmd_resources,
            "retry": cmd_request, "cancel": cmd_request, "check": cmd_check,
            "diagram": cmd_diagram}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, UsageError) as exc:
        print(f"caseflow: {exc}", file=sys.stderr)
        return 2
    except CaseflowError as exc:
        print(f"caseflow: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
