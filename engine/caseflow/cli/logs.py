"""`caseflow logs CASE [-f]`: the job's log; with -f, its output as the job writes it.

An ended case's log is the copy the engine kept when the job ended (next to the database, or
in its results folder). A running job's output is read on its host, where its backend keeps it
(caseflow.job_output): this process connects with the host's configured transport, as `caseflow
check` does, and only reads; the daemon's own connection and work are not touched. With -f it
reads from where it left off once per INTERVAL (one command) until the case ends, then says
how it ended; a case whose job has not started yet is waited for. What the job printed goes to
stdout as `job_output.Shown` makes it safe for a terminal; everything else goes to stderr.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..backends import LOG_TAIL_BYTES, JobRef, make_backend
from ..config import Config
from ..core.case_model import job_log_path
from ..errors import CaseflowError
from ..job_output import LogReader, Shown, log_path
from ..spec import MachineSpec
from ..store import CaseRow, Store
from ..transports import make_transport
from ..views import one_line, printable, size, state_cell

INTERVAL = 1.0  # seconds between two reads of a running job's log (one remote command each)


def say(text: str) -> None:
    print(f"caseflow: {text}", file=sys.stderr, flush=True)


def out(text: str) -> None:
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()


class Logs:
    def __init__(self, config: Config, store: Store, spec: MachineSpec, row: CaseRow):
        self.config = config
        self.store = store
        self.spec = spec
        self.row = row
        self.terminal = set(spec.terminal_states)
        self.job = set(spec.job_states)
        self.shown = Shown()
        self.title = f"case {row.id} {printable(row.name)}"

    def run(self, follow: bool) -> int:
        row = self.row
        if row.state not in self.terminal and row.state not in self.job:
            if not follow:
                raise CaseflowError(
                    f"{self.title} has not started its job yet: it is "
                    f"{state_cell(row, time.time())}; `caseflow logs -f {row.id}` waits for "
                    "it and follows its output"
                )
            row = self.wait_for_start()
        if row.state in self.terminal:
            self.kept(row)
            if follow:
                self.ended(row)
            return 0
        return self.read_on_host(row, follow)

    # -- a case whose job has not started ---------------------------------------------------
    def wait_for_start(self) -> CaseRow:
        """The case once its job may run (or it ended without one), saying what it waits for
        whenever that changes."""
        said = None
        while True:
            row = self.fresh()
            if row.state in self.job or row.state in self.terminal:
                return row
            text = (
                f"waiting for {self.title} to start its job: it is {state_cell(row, time.time())}"
            )
            state = next(s for s in self.spec.states if s.name == row.state)
            if state.description:
                text += f" ({state.description.rstrip('.')})"
            if row.last_error:
                text += f"; retrying after: {one_line(row.last_error)}"
            if text != said:
                say(text)
                said = text
            time.sleep(INTERVAL)

    def fresh(self) -> CaseRow:
        row = self.store.get(self.row.id)
        assert row is not None  # cases are never deleted
        return row

    # -- an ended case ---------------------------------------------------------------------
    def kept_file(self, row: CaseRow) -> Path | None:
        """The log the engine kept of the case's run, next to the database or (a store whose
        copy went) in its results folder."""
        candidates = [job_log_path(self.config.database, row)]
        if row.results_path:
            results = Path(row.results_path)
            candidates += [results / f"caseflow-job-run{row.run}.log", results / "caseflow-job.log"]
        return next((p for p in candidates if p.is_file()), None)

    def kept(self, row: CaseRow) -> None:
        path = self.kept_file(row)
        if path is None:
            raise CaseflowError(
                f"{self.title} ended ({row.state}) and no log of its job was kept: "
                + (
                    "it never started one"
                    if not row.task_id
                    else "the log could not be fetched (see `caseflow show "
                    f"{row.id}`); the case folder on host {row.slot_host or row.host} may "
                    f"still hold it: {row.remote_path}"
                )
            )
        data = path.read_bytes()
        if len(data) >= LOG_TAIL_BYTES:
            say(f"the job's output was kept from its last {size(LOG_TAIL_BYTES)} ({path})")
        out(self.shown.feed(data, final=True))

    def ended(self, row: CaseRow) -> None:
        why = row.reason
        if not why:
            history = self.store.history(row.id)
            why = history[-1].detail if history else None
        say(f"{self.title} ended: {row.state}" + (f" ({one_line(why, 10_000)})" if why else ""))

    # -- a job that may run: its log on the host ---------------------------------------------
    def read_on_host(self, row: CaseRow, follow: bool) -> int:
        name = row.slot_host or row.host
        host = next((h for h in self.config.hosts if h.name == name), None)
        if host is None:
            raise CaseflowError(
                f"{self.title} runs on host {name!r}, which is not in the configuration"
            )
        transport = make_transport(host.transport)
        try:
            backend = make_backend(host, transport)  # (makes nothing; only names the file)
            ref = JobRef(row.id, row.task_id or "", "", row.remote_path or "")
            path = log_path(backend, ref)
            if path is None:
                raise CaseflowError(
                    f"{self.title} has no case folder on host {host.name} (yet); "
                    f"`caseflow logs {row.id}` shows the log once the job has ended"
                    if not row.remote_path
                    else f"the {host.backend.kind} backend keeps no log file in the case folder; "
                    f"`caseflow logs {row.id}` shows the log once the job has ended"
                )
            return Follow(
                self, host.name, transport.name, LogReader(transport, path, LOG_TAIL_BYTES)
            ).run(follow)
        finally:
            transport.close()


class Follow:
    """Reading one job's log on its host until the case ends (or, without -f, until what is
    there now has been read)."""

    def __init__(self, logs: Logs, host: str, where: str, reader: LogReader):
        self.logs = logs
        self.host = host
        self.where = f"{where}:{reader.path}"
        self.reader = reader
        self.down: str | None = None  # why the last read failed, said once
        self.waiting = False  # said that the file is not there yet

    def run(self, follow: bool) -> int:
        logs = self.logs
        while True:
            row = logs.fresh()  # before the read: a case seen ended has all its output there
            over = row.run != logs.row.run or row.state in logs.terminal
            try:
                got = self.reader.read()
            except CaseflowError as exc:
                if not follow:
                    raise CaseflowError(
                        f"cannot read the job's log on host {self.host}: {exc}; `caseflow logs "
                        f"{row.id}` shows the log that comes home when the job ends"
                    ) from None
                if over:
                    self.rest_from_kept(row)
                    break
                if self.down is None:
                    say(
                        f"cannot read the log on host {self.host} ({exc}); trying again every "
                        f"{INTERVAL:g} s"
                    )
                self.down = str(exc)
                time.sleep(INTERVAL)
                continue
            if self.down is not None:
                say(f"host {self.host} answers again")
                self.down = None
            if got.note:
                say(got.note)
            if got.missing:
                if over:
                    self.rest_from_kept(row)
                    break
                if not follow:
                    raise CaseflowError(
                        f"{logs.title}: no log on host {self.host} yet ({self.where}): the job "
                        f"has not written it yet (it is {state_cell(row, time.time())}); "
                        f"`caseflow logs -f {row.id}` waits for it"
                    )
                if not self.waiting:
                    say(
                        f"waiting for the job to write its log ({self.where}; it is "
                        f"{state_cell(row, time.time())})"
                    )
                    self.waiting = True
            else:
                out(logs.shown.feed(got.data))
            if got.more:
                continue
            if over or not follow:
                break
            time.sleep(INTERVAL)
        out(logs.shown.feed(b"", final=True))
        if over and row.run == logs.row.run:
            logs.ended(logs.fresh())
        elif over:  # it ended and was retried between two reads
            say(
                f"{logs.title}: run {logs.row.run} ended and the case runs again (run "
                f"{row.run}); `caseflow logs -f {row.id}` follows that run"
            )
        elif not follow:
            say(f"the job is still running; `caseflow logs -f {row.id}` follows its output")
        return 0

    def rest_from_kept(self, row: CaseRow) -> None:
        """The case ended and its log on the host cannot be read any more (the case folder was
        cleaned up): what was not read yet, from the copy the engine kept, when that copy is the
        whole log (else where it is)."""
        kept = self.logs.kept_file(row) if row.run == self.logs.row.run else None
        if kept is None:
            return
        data = kept.read_bytes()
        offset = self.reader.offset or 0
        if len(data) < LOG_TAIL_BYTES and len(data) >= offset:
            out(self.logs.shown.feed(data[offset:]))
        else:
            say(f"the rest of the job's output is in {kept}")


def show_log(config: Config, store: Store, spec: MachineSpec, row: CaseRow, follow: bool) -> int:
    return Logs(config, store, spec, row).run(follow)
