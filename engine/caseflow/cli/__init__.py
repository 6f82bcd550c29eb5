"""The `caseflow` command line.

Exit codes: 0 done, 1 a failure (unknown case, refused request, daemon already
running, a database that cannot be read, ...), 2 bad configuration or usage.
Errors go to stderr as one line; an ordinary mistake never shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from .. import prune
from ..config import config_path_from, load_config
from ..core.case_model import job_log_path
from ..core.engine import Engine
from ..core.machine import CaseMachine
from ..daemon import Daemon, DaemonLock
from ..diagram import render
from ..errors import AlreadyRunning, CaseflowError, ConfigError
from ..service import notify_systemd, setup_logging
from ..spec import load_spec
from ..store import CaseRow, Store
from ..store.reader import StatusReader
from ..text import plural
from ..views import (
    case_detail,
    case_json,
    durations_block,
    group_hosts,
    host_lines,
    host_waits,
    iso,
    one_line,
    printable,
    runs_of,
    size,
    slot_json,
    status_table,
    table,
    upload_text,
)
from .args import UsageError, build_parser
from .files import cmd_files, cmd_help, cmd_init

_open_stores: list[Store] = []  # closed when the command ends (no -wal/-shm left behind)


def _open(args) -> tuple:
    config = load_config(config_path_from(args.config))
    if not config.database.is_file():
        raise CaseflowError(f"no database at {config.database} yet: start `caseflow run` first")
    store = Store(config.database)
    _open_stores.append(store)
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
    setup_logging(config.log_level, config.log_file, args.log_format)
    daemon = Daemon(config)
    daemon.install_signal_handlers()

    def ready():  # a Type=notify systemd unit counts as started from here
        daemon.ready.wait()
        notify_systemd("READY=1")

    threading.Thread(target=ready, name="notify-ready", daemon=True).start()
    return daemon.run()


def cmd_status(args) -> int:
    config, store = _open(args)
    spec = load_spec()
    if args.state and args.state not in spec.state_names:
        raise UsageError(
            f"--state: unknown state {args.state!r}; states: " + ", ".join(spec.state_names)
        )
    if args.watch:
        if args.json:
            raise UsageError("--watch redraws the table; it cannot be combined with --json")
        from .status_watch import watch

        return watch(store, spec, args.state, groups=group_hosts(config))
    rows = store.cases([args.state] if args.state else None)
    terminal = set(spec.terminal_states)
    reader = StatusReader(store.path)
    try:
        # a host no longer configured is nobody's to probe: its old problem is not shown
        hosts = [h for h in reader.hosts() if config.host(h.name) is not None]
    finally:
        reader.close()
    waits = host_waits(hosts, group_hosts(config))
    histories = store.histories(r.id for r in rows)  # for the durations
    now = time.time()
    if args.json:
        print(
            json.dumps(
                [case_json(r, r.state in terminal, now, histories[r.id], waits) for r in rows],
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    for line in host_lines(hosts):
        print(line)
    if not rows:
        print("no cases")
        return 0
    print(status_table(rows, now, histories, waits))
    return 0


def _field(key: str, value) -> str:
    """`key: value`, a value of several lines (a YAML error, a hook's output) in full, its
    further lines indented under the first."""
    lines = [printable(v) for v in str(value).splitlines()] if value is not None else ["-"]
    return "\n".join(
        [f"{key + ':':17} {lines[0] if lines else ''}"] + [f"{'':17} {line}" for line in lines[1:]]
    )


def cmd_show(args) -> int:
    config, store = _open(args)
    spec = load_spec()
    row = resolve(store, args.case)
    history = store.history(row.id)
    log_file = job_log_path(config.database, row)
    reader = StatusReader(store.path)
    try:
        waits = host_waits(reader.hosts(), group_hosts(config))
    finally:
        reader.close()
    now = time.time()
    out = case_json(row, row.state in spec.terminal_states, now, history, waits)
    if args.json:
        out = case_detail(config.database, row, history, now, waits)
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    for key, value in out.items():
        if key not in ("durations", "job_times"):  # a block of their own, below
            print(_field(key, value))
    progress = upload_text(row, now)
    if progress:
        print(_field("uploading", progress))
    print(durations_block(row, out["durations"], spec.terminal_states))
    if row.results_fetched and row.results_path:
        print(f"\nresults are in {printable(row.results_path)}")
    elif row.results_path and row.job_outcome:
        print(f"\nresults are being fetched into {printable(row.results_path)}")
    if log_file.exists():
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        print(f"\njob log ({log_file}), last {min(10, len(lines))} of {len(lines)} lines:")
        for line in lines[-10:]:
            print(f"  {printable(line)}")
    runs = runs_of(config.database, row, history)
    if len(runs) > 1:  # retried or rerun: how each run ended, where its log is
        print("\nruns:")
        print(
            table(
                ["RUN", "BEGAN", "ENDED", "HOW", "LOG"],
                [
                    [
                        str(r["run"]),
                        r["began_at"],
                        r["ended_at"] or "-",
                        one_line(f"{r['ended']}: {r['detail'] or r['to']}", 200)
                        if r["ended"]
                        else "going on",
                        r["job_log"] or "-",
                    ]
                    for r in runs
                ],
            )
        )
    print("\nhistory:")
    print(
        table(
            ["AT", "FROM", "TO", "TRIGGER", "DETAIL"],
            [
                [iso(h.at), h.src or "-", h.dst, h.trigger, one_line(h.detail, 10_000)]
                for h in history
            ],
        )
    )
    return 0


def cmd_logs(args) -> int:
    from .logs import show_log

    config, store = _open(args)
    return show_log(config, store, load_spec(), resolve(store, args.case), args.follow)


def cmd_resources(args) -> int:
    config, store = _open(args)
    slots = store.slots()
    if args.json:
        print(json.dumps([slot_json(s) for s in slots], indent=2, ensure_ascii=False))
        return 0
    print(
        table(
            ["HOST", "GROUP", "SLOT", "DEVICE", "CASE", "STATE", "NOTE"],
            [
                [
                    s.host or "-",
                    s.grp,
                    str(s.idx),
                    s.device or "-",
                    f"{s.case_id} {printable(s.case_name)}" if s.case_id else "free",
                    s.case_state or "-",
                    "retired" if s.retired else "",
                ]
                for s in slots
            ],
        )
    )
    return 0


def cmd_request(args) -> int:
    """retry / cancel: recorded in the store; the daemon applies it (or we do, if none runs).
    What is printed is what happened: the transition the request made (found in the
    history, not guessed from the state, which may have moved on) and where the case is."""
    trigger = args.command
    config, store = _open(args)
    spec = load_spec()
    machine = CaseMachine(spec)
    if args.case is None:
        return _bulk_request(args, config, store, machine)
    if args.state or args.host or args.since:
        raise UsageError("name a case, or select cases with --state/--host/--since; not both")
    row = resolve(store, args.case)
    if not machine.allowed(trigger, row.state):
        raise CaseflowError(
            f"case {row.id} {printable(row.name)!s} is {row.state}; {trigger} "
            f"applies to: {', '.join(machine.states_allowing(trigger))}"
        )
    mark = max((h.id for h in store.history(row.id)), default=0)
    store.set_request(row.id, trigger)
    lock = DaemonLock(config.database)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(
            f"{trigger} of case {row.id} requested; the running daemon (pid {exc.pid}) "
            "applies it at its next tick"
        )
        if args.no_wait:
            return 0
        deadline = time.monotonic() + args.wait
        while (now := store.get(row.id)) is not None and now.request is not None:
            if time.monotonic() >= deadline:
                if now.reason and now.stop_since is not None:  # its job is being stopped
                    return _report_stopping(config, now)
                print(
                    f"not applied within {args.wait:.0f} s; it stays requested and the "
                    "daemon applies it when it can",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.2)
        return _report(store, trigger, row, mark, daemon_pid=exc.pid)
    try:
        engine = Engine(config, spec=spec, store=store)
        engine.start(workers=False)
        engine.apply_request(store.get(row.id))
        _stop_now(engine, row.id)
        engine.shutdown()
    finally:
        lock.release()
    return _report(store, trigger, row, mark, daemon_pid=None)


def _since(text: str, option: str = "--since") -> float:
    """--since, --ended-before: an ISO 8601 date or time (local unless it gives Z or an
    offset)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        return when.timestamp()  # (naive: local time)
    except (ValueError, OverflowError, OSError):  # not a time, or out of range (year 1, 9999)
        raise UsageError(
            f"{option} {text!r}: not a date or time caseflow can use (ISO 8601: 2026-12-07 "
            "or 2026-12-07T14:00)"
        ) from None


def _confirmed(what: str, yes: bool) -> bool:
    """Whether to go on with `what` (e.g. "retry these 3 cases"), listed above: --yes, or the
    person at the terminal said so; with no terminal to ask in, a usage error."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"add --yes to {what} (no terminal to ask in)")
    try:
        answer = input("go on? [y/N] ")
    except EOFError:  # Ctrl-D: no
        answer = ""
        print()
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("nothing done")
    return False


def _bulk_request(args, config, store: Store, machine: CaseMachine) -> int:
    """retry / cancel of every case that --state, --host and --since select (and the request
    applies to): listed, confirmed unless --yes, then requested one by one and reported."""
    trigger = args.command
    if not (args.state or args.host):
        raise UsageError(
            f"name a case, or select cases with --state or --host: `caseflow "
            f"{trigger} CASE`, `caseflow {trigger} --state failure`"
        )
    states = load_spec().state_names
    if args.state and args.state not in states:
        raise UsageError(f"--state {args.state!r}: not a state; states: " + ", ".join(states))
    if args.host and args.host not in [h.name for h in config.hosts]:
        raise UsageError(
            f"--host {args.host!r}: no such host; configured: "
            + ", ".join(h.name for h in config.hosts)
        )
    since = _since(args.since) if args.since is not None else None
    rows = [
        r
        for r in store.cases([args.state] if args.state else None)
        if (not args.host or args.host in (r.host, r.slot_host))
        and (since is None or (r.updated_at or 0) >= since)
        and machine.allowed(trigger, r.state)
        and r.request is None
    ]
    if not rows:
        print(f"no case to {trigger}: none selected that {trigger} applies to")
        return 0
    print(f"{trigger} {plural(len(rows), 'case')}:")
    for r in rows:
        print(f"  case {r.id} {printable(r.name)} ({r.state}{', ' + r.host if r.host else ''})")
    if not _confirmed(f"{trigger} these {plural(len(rows), 'case')}", args.yes):
        return 1
    lock = DaemonLock(config.database)
    try:
        lock.acquire()
    except AlreadyRunning as exc:  # all requested at once; the daemon applies them together
        marks = {r.id: max((h.id for h in store.history(r.id)), default=0) for r in rows}
        for r in rows:
            store.set_request(r.id, trigger)
        print(f"requested; the running daemon (pid {exc.pid}) applies them at its next tick")
        if args.no_wait:
            return 0
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline and any(
            (now := store.get(r.id)) is not None and now.request is not None for r in rows
        ):
            time.sleep(0.2)
        reports = []
        for r in rows:
            now = store.get(r.id)
            if now is not None and now.request and now.reason and now.stop_since is not None:
                reports.append(_report_stopping(config, now))  # its job is being stopped
            else:
                reports.append(_report(store, trigger, r, marks[r.id], daemon_pid=exc.pid))
        return 1 if any(reports) else 0
    lock.release()  # no daemon: each is applied here, one after the other
    failed = 0
    for r in rows:
        one = argparse.Namespace(
            **{**vars(args), "case": str(r.id), "state": None, "host": None, "since": None}
        )
        try:
            failed += cmd_request(one) != 0
        except CaseflowError as exc:  # it moved on meanwhile
            print(f"case {r.id} {printable(r.name)}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _stop_now(engine: Engine, case_id: int) -> None:
    """No daemon runs: a job being stopped first (TERM, KILL after stop_grace_seconds) is
    followed here until it is gone and its case has ended, as the daemon would."""
    from ..core import jobs

    deadline = time.monotonic() + engine.config.stop_grace_seconds + 60
    while time.monotonic() < deadline:
        now = engine.store.get(case_id)
        if now is None or not (now.reason and now.state in engine.job_states):
            return
        jobs.stop(engine, now)
        time.sleep(0.2)


def _report_stopping(config, row: CaseRow) -> int:
    print(
        f"case {row.id} {printable(row.name)}: stopping its job (SIGTERM; SIGKILL after "
        f"{config.stop_grace_seconds:g} s if it still runs); the case keeps its GPU slot until "
        "the job is gone, then ends; follow it with `caseflow show "
        f"{row.id}`"
    )
    return 0


def _report(store: Store, trigger: str, before: CaseRow, mark: int, daemon_pid: int | None) -> int:
    now = store.get(before.id)
    name = printable(before.name)
    if now is None:  # pruned meanwhile (a prune takes no case with a request waiting)
        print(f"case {before.id} {name}: no longer in the store (pruned)", file=sys.stderr)
        return 1
    done = next((h for h in store.history(before.id) if h.id > mark and h.trigger == trigger), None)
    if done is None:
        why = f": {one_line(now.last_error)}" if now.last_error else ""
        still = "; it stays requested" if now.request else ""
        print(
            f"case {before.id} {name}: {trigger} was not applied; it is {now.state}{why}{still}",
            file=sys.stderr,
        )
        return 1
    line = f"case {before.id} {name}: {done.src} -> {done.dst}"
    if trigger == "cancel":
        line = f"case {before.id} {name}: cancelled: {done.src} -> {done.dst}"
        if now.reason:
            line += f" ({one_line(now.reason)})"
        if now.state != done.dst:
            line += f"; it is now {now.state}"
    else:
        line = (
            f"case {before.id} {name}: retry accepted (run {now.run}): {done.src} -> "
            f"{done.dst}; it is now {now.state}"
        )
        line += (
            f" and goes on in the running daemon (pid {daemon_pid})"
            if daemon_pid
            else " and goes on when `caseflow run` runs"
        )
        line += f"; follow it with `caseflow show {before.id}`"
    print(line)
    return 0


def cmd_check(args) -> int:
    from ..check import check_host, check_local

    config = load_config(config_path_from(args.config))
    local = check_local(config)
    if local:
        print("this machine")
        for line in local:
            print(line)
    ok = all(line.ok for line in local)
    for host in config.hosts:
        title, lines = check_host(host)
        print(title)
        for line in lines:
            print(line)
        ok = ok and all(line.ok for line in lines)
    print("all checks passed" if ok else "some checks failed")
    return 0 if ok else 1


def cmd_login(args) -> int:
    """Open a host's OpenSSH master connection here, in the terminal (transport openssh)."""
    from ..transports.openssh_master import Master
    from ..transports.ssh_settings import OpenSSHConfig

    config = load_config(config_path_from(args.config))
    hosts = [h for h in config.hosts if h.transport.kind == "openssh"]
    if args.host is not None:
        hosts = [h for h in config.hosts if h.name == args.host]
        if not hosts:
            raise UsageError(
                f"no host {args.host!r}; configured: " + ", ".join(h.name for h in config.hosts)
            )
        if hosts[0].transport.kind != "openssh":
            raise UsageError(
                f"host {args.host} uses the {hosts[0].transport.kind} transport; "
                "caseflow login is for transport kind openssh"
            )
    elif len(hosts) != 1:
        raise UsageError(
            "name the host: caseflow login HOST (openssh hosts: "
            + (", ".join(h.name for h in hosts) or "none")
            + ")"
        )
    host = hosts[0]
    settings = host.transport
    assert isinstance(settings, OpenSSHConfig)  # kind openssh, as chosen above
    master = Master(settings)
    pid = master.pid()
    if pid is None and not sys.stdin.isatty():
        # ssh would ask for the one-time code or password where nobody can answer
        raise UsageError(
            f"caseflow login {host.name} asks for the host's login (a one-time code, a "
            "password): run it in a terminal. For a host that needs no person at login "
            "(keys, an agent), `master: daemon` has caseflow open the connection itself"
        )
    if pid is None:
        print(f"logging in to {host.name} ({settings.host}) ...", flush=True)
        rc = master.login()
        pid = master.pid()
        if pid is None:
            print(f"caseflow: not logged in to {host.name}: ssh exited {rc}", file=sys.stderr)
            return 1
        print(
            f"logged in to {host.name}: master connection up (pid {pid}, "
            f"{master.socket_path()}); it closes after {settings.control_persist} "
            "unused (control_persist)"
        )
    else:
        print(
            f"{host.name}: already logged in (master connection pid {pid}, {master.socket_path()})"
        )
    print(f"a running caseflow daemon uses it within {master.probe_seconds:.0f} s")
    return 0


def cmd_diagram(args) -> int:
    out = render(load_spec(), args.format)
    data = out if isinstance(out, bytes) else (out if out.endswith("\n") else out + "\n").encode()
    if not args.output:
        sys.stdout.buffer.write(data)
        return 0
    target = Path(args.output)
    if not target.parent.is_dir():
        raise UsageError(f"-o {target}: folder {target.parent} does not exist")
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"-o {target}: cannot write: {exc.strerror or exc}") from exc
    return 0


def cmd_host(args) -> int:
    """`caseflow host pause|resume HOST`: the drain is kept in the store; a running daemon
    follows it at its next tick (one that starts later, at its first)."""
    names = [h.name for h in load_config(config_path_from(args.config)).hosts]
    if args.host not in names:
        raise UsageError(f"no host {args.host!r}; configured: {', '.join(names)}")
    config, store = _open(args)
    holding = [r for r in store.cases(load_spec().slot_states) if r.host == args.host]
    now = time.time()
    if args.action == "pause":
        reason = " ".join(args.reason.split()) or "drained by an operator"
        store.set_host_drain(args.host, reason, now)
        since = store.host_drains()[args.host][1]
        print(
            f"host {args.host}: drained since {iso(since)} ({reason}): it takes no new case "
            f"and starts no upload or submit; {plural(len(holding), 'case')} on it "
            "(running jobs go on; the others wait). `caseflow host resume "
            f"{args.host}` ends it"
        )
        return 0
    if not store.set_host_drain(args.host, None, now):
        print(f"host {args.host}: not drained; nothing to do")
        return 0
    # its waiting cases are due now (a daemon that runs does the same when it sees the drain
    # lifted; one started later would not see a change: found by a review)
    store.wake_host(args.host, load_spec().slot_states, now)
    print(f"host {args.host}: resumed; {plural(len(holding), 'case')} on it go on")
    return 0


LISTED = 20  # cases listed one by one; of more, the first ones and a count


def _listing(rows: list[CaseRow], line) -> None:
    for r in rows[:LISTED]:
        print(f"  {line(r)}")
    if len(rows) > LISTED:
        print(f"  ... and {len(rows) - LISTED:,} more")


def cmd_prune(args) -> int:
    """`caseflow prune --ended-before DATE`: ended cases leave the store (caseflow.prune),
    listed and confirmed first. With a daemon running or without one: the command writes the
    store the daemon uses, as a retry or cancel does (SQLite serialises the two writers),
    and removes only cases the daemon has nothing left to do for."""
    before = _since(args.ended_before, "--ended-before")
    export_to = Path(args.export) if args.export else None
    if export_to is not None:
        try:
            prune.check_export(export_to)
        except prune.ExportError as exc:
            raise UsageError(str(exc)) from None
    config, store = _open(args)
    terminal = load_spec().terminal_states
    planned = prune.plan(store, config.inbox, before, terminal)
    cut = iso(before)
    if planned.prune:
        per_state = Counter(r.state for r in planned.prune)
        print(
            f"prune {plural(len(planned.prune), 'case')} that ended before {cut} ("
            + ", ".join(f"{state} {n:,}" for state, n in sorted(per_state.items()))
            + "):"
        )
        _listing(
            planned.prune,
            lambda r: f"case {r.id} {printable(r.name)} ({r.state}, ended {iso(r.updated_at)})",
        )
    else:
        print(f"no case to prune: none that ended before {cut} can go now")
    if planned.kept:
        print(
            f"kept: {plural(len(planned.kept), 'case')} whose folder is still in the inbox (it "
            "would be taken for a new case and run again once its case is gone); move the "
            "folder out of the inbox (or archive ended cases: `archive:`), then prune again:"
        )
        _listing(
            planned.kept, lambda r: f"case {r.id} {printable(r.name)}: {printable(r.local_path)}"
        )
    if planned.unsettled:
        print(
            f"not yet: {plural(len(planned.unsettled), 'case')} that ended before {cut} "
            "still wait for their wrap-up, a request or their GPU slot; a later prune takes them"
        )
    if not planned.prune:
        return 0
    if export_to is not None:
        print(f"they are written to {export_to} first")
    if not _confirmed(f"prune these {plural(len(planned.prune), 'case')}", args.yes):
        return 1
    size_before = store.file_size()
    try:
        done = prune.carry_out(store, config.inbox, planned, terminal, export_to)
    except prune.ExportError as exc:
        raise CaseflowError(f"{exc}; nothing was pruned") from None
    if done.exported:
        print(f"exported {plural(done.exported, 'case')} to {export_to}")
    if len(done.removed) <= LISTED:
        for r in done.removed:
            print(f"case {r.id} {printable(r.name)}: pruned ({r.state})")
    else:
        print(f"pruned {plural(len(done.removed), 'case')}")
    if done.changed:
        print(
            f"left as they are: {plural(len(done.changed), 'case')} that changed meanwhile (a "
            "request, a retry, their folder back in the inbox):"
        )
        _listing(done.changed, lambda r: f"case {r.id} {printable(r.name)}")
    if not done.removed:
        return 0
    where = config.database
    if args.no_vacuum:
        store.checkpoint()
        print(
            f"store {where}: {size(size_before)} before, {size(store.file_size())} after; "
            f"{size(store.free_bytes())} of it free, which new cases reuse (without "
            "--no-vacuum the file gives it back)"
        )
        return 0
    try:
        store.compact()
    except sqlite3.Error as exc:  # e.g. no room for the copy VACUUM writes
        print(
            f"caseflow: store {where}: the cases are pruned, but the file was not made "
            f"smaller: {exc}; new cases reuse the freed space",
            file=sys.stderr,
        )
        return 1
    print(f"store {where}: {size(size_before)} before, {size(store.file_size())} after")
    return 0


COMMANDS = {
    "run": cmd_run,
    "status": cmd_status,
    "show": cmd_show,
    "logs": cmd_logs,
    "resources": cmd_resources,
    "retry": cmd_request,
    "cancel": cmd_request,
    "host": cmd_host,
    "prune": cmd_prune,
    "check": cmd_check,
    "login": cmd_login,
    "diagram": cmd_diagram,
    "init": cmd_init,
    "files": cmd_files,
    "help": cmd_help,
}


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
    except sqlite3.Error as exc:  # a file that is not a database, or one that cannot be read
        where = _open_stores[-1].path if _open_stores else "the database"
        print(f"caseflow: {where}: cannot use the database: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `caseflow status | head`: the reader has gone; so do we
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(
            f"caseflow: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        while _open_stores:
            _open_stores.pop().close()
