"""The `gridengine` backend: each case is one Grid Engine batch job, submitted with `qsub`
(Son of Grid Engine 8.1.9 as Debian 12 ships it; the commands are those of every Grid Engine).

It is a `ScriptedBackend` (scripted.py): every call is ONE remote command, a small `sh` script
(scripts/gridengine-*.sh) that takes every variable part as a positional parameter.

- The job's name is the case's label. Before submitting, the submit script looks for a job of
  that name (the record `.caseflow/gridengine-job` in the case folder, then `qstat -j NAME`)
  and adopts it: a case never gets two jobs, even when caseflow died between `qsub` and
  recording the id.
- The job script is caseflow's own wrapper (`.caseflow/gridengine-job.sh`, no case data in it),
  run by `/bin/sh` (`-S /bin/sh -b n`) in the case folder (`-wd`). The job's command line
  `env CASEFLOW_...=... COMMAND` is passed as the script's arguments: Grid Engine keeps them
  verbatim except that it cuts one at a newline, so newlines and backslashes go written as
  `\\0012` and `\\0134` and the wrapper turns them back (`printf %b`). Never `-v`: it splits
  values at commas. The wrapper records "NAME ID" in `.caseflow/gridengine-job` when it starts
  and "ID EXIT_CODE" in `.caseflow/gridengine-exit` when the command ends; the command's
  stdout and stderr go to `.caseflow/gridengine.out` (Grid Engine's own `-o` is /dev/null: it
  would expand `$` and split at `,` and `:` in a path). Before it writes the exit code it ends
  what the command left running (Grid Engine's additional group id of the job, or
  CASEFLOW_JOB=LABEL in the environment: a child in a session of its own outlives the process
  group Grid Engine ends), it lives through SIGUSR1/SIGUSR2 (a soft limit's warning; a qdel,
  the job being submitted with -notify), and it never exits 99 or 100 (Grid Engine: "run
  again", "error state"); the exit code file keeps the command's own code.
- Polling is one command per host per tick: `qstat -xml` of the user's own jobs; for a job in
  an error state (Eqw) its reasons (`qstat -j ID`); only for the ids qstat no longer lists,
  `qacct -j ID` and the exit code file. A job qstat lists has not ended (RUNNING, Eqw too: it
  waits for a person, and `notice` says so); an accounting record whose `failed` is not 0 is a
  failure whatever the exit status (100 after a `qdel` of a running job, exit status 137). A
  job gone from qstat whose record is not written yet counts as running for up to
  `accounting_wait_seconds`.
- Cancel is `qdel ID` after `qstat -j ID` said the job is still named after the case (ids start
  over when the qmaster loses its spool). A pending job deleted gets no accounting record: it
  is then not_found.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timezone
from typing import Any

from ..errors import PermanentError, TransientError
from ..transports import RunResult, Transport
from ..transports.shell import script, source
from . import (
    FAILURE,
    NOT_FOUND,
    RUNNING,
    SUCCESS,
    UNREADABLE,
    BackendAdapter,
    JobRef,
    JobSpec,
    JobStatus,
)
from .gridengine_options import GridEngineConfig, check_host, read_config
from .gridengine_status import (
    NO_RECORD,
    Poll,
    Queued,
    accounted_outcome,
    parse_qacct,
    queued_outcome,
)
from .output import BadOutput, quote_start
from .scripted import ScriptedBackend, job_argv, script_argv, short

log = logging.getLogger("caseflow.gridengine")

RECORD = "gridengine-job"  # .caseflow/RECORD: "LABEL ID", by the submit and the wrapper
EXIT_FILE = ".caseflow/gridengine-exit"  # "ID EXIT_CODE", by the wrapper
OUTPUT = ".caseflow/gridengine.out"  # the command's stdout and stderr
WRAPPER = ".caseflow/gridengine-job.sh"

# The remote scripts: scripts/gridengine-*.sh. The job script (the same for every case) is
# written to the case folder as it is; its arguments are the job's command line.
JOB_WRAPPER = source(__package__, "gridengine-job.sh")
SUBMIT = script(__package__, "gridengine-submit.sh")
POLL = script(__package__, "gridengine-poll.sh")
CANCEL = script(__package__, "gridengine-cancel.sh")
FIND = script(__package__, "gridengine-find.sh")

# qsub's messages that are worth trying again (the qmaster down, busy, or the user's job
# limit reached); anything else it refuses is permanent (an unknown queue, resource or PE)
TRANSIENT_QSUB = (
    "unable to send message to qmaster",
    "unable to contact qmaster",
    "commlib error",
    "got send error",
    "timed out",
    "timeout",
    "try again",
    "Connection refused",
    "jobs are allowed per user",
    "max_u_jobs",
    "max_jobs",
)


def job_arg(arg: str) -> str:
    """One argument of the job's command line as the wrapper reads it back with `printf %b`:
    Grid Engine cuts an argument at a newline, so newlines (and backslashes, the escape) go
    as octal escapes."""
    return arg.replace("\\", "\\0134").replace("\n", "\\0012")


class GridEngineBackend(ScriptedBackend[Poll]):
    queue = "Grid Engine"
    QUEUE_TOOLS = ("qsub", "qstat", "qacct", "qdel")
    RECORD = RECORD
    LOG = OUTPUT
    TRANSIENT_REFUSALS = TRANSIENT_QSUB

    def __init__(
        self,
        transport: Transport,
        backend_config: GridEngineConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(transport)
        self.config = backend_config
        self.stuck: dict[str, str] = {}  # job id -> its state, for the jobs a person must free
        # job id -> when a poll first found it gone from qstat without an accounting record
        # (in memory: after a restart the wait starts again, which only delays the verdict)
        self.unaccounted: dict[str, float] = {}
        self.clock = clock
        self.accounting_wait = (
            backend_config.accounting_wait_seconds
            if isinstance(backend_config, GridEngineConfig)
            else GridEngineConfig.accounting_wait_seconds
        )

    def qsub_args(self, job: JobSpec) -> list[str]:
        if "$" in job.remote_path:  # the configuration refuses such a root (check_host)
            raise PermanentError(
                f"Grid Engine would expand the '$' in the case folder {job.remote_path!r}"
            )
        if "\n" in job.remote_path or "\r" in job.remote_path:
            # Grid Engine cuts -wd at a line break: the job would wait in Eqw for good ("can't
            # chdir"), and clearing the error would not help (found by a review, stop 35)
            raise PermanentError(
                f"Grid Engine cannot run a job in a folder whose name has a line break "
                f"({job.remote_path!r}): rename the case folder without one and copy it in again"
            )
        options = self.config.gridengine_options(job.group).qsub_args() if self.config else []
        return [
            "-N", job.label,
            "-wd", job.remote_path,
            "-o", "/dev/null", "-j", "y",
            "-b", "n", "-S", "/bin/sh",
            # a qdel sends SIGUSR2 first (SIGKILL after the cluster's `notify` time): the
            # wrapper lives on to end what the command left (a bare qdel killed it too)
            "-notify",
            *options,
            f"{job.remote_path}/{WRAPPER}",
            # CASEFLOW_JOB: how the wrapper finds what the command left running (a child in a
            # session of its own) and ends it before the job counts as ended
            *map(job_arg, job_argv(job, env={"CASEFLOW_JOB": job.label})),
        ]  # fmt: skip

    # -- the commands --------------------------------------------------------------------
    def submit_command(self, job: JobSpec) -> list[str]:
        return script_argv(
            SUBMIT, "caseflow-qsub", job.remote_path, job.label, JOB_WRAPPER, *self.qsub_args(job)
        )

    def poll_command(self, jobs: Sequence[JobRef]) -> list[str]:
        args = [a for j in jobs for a in (j.task_id, j.remote_path or "/nonexistent")]
        return script_argv(POLL, "caseflow-qstat", *args)

    def cancel_command(self, job: JobRef, force: bool) -> list[str]:
        # Grid Engine has one way to stop a job: qdel, which kills it (SIGKILL, unless the
        # queue's terminate_method says otherwise); `force` changes nothing (`qdel -f` would
        # only forget a job whose host does not answer, while it may still run there)
        return script_argv(CANCEL, "caseflow-qdel", job.task_id, job.label)

    # -- the answers ---------------------------------------------------------------------
    def read_poll(self, res: RunResult, jobs: Sequence[JobRef]) -> Poll:
        poll = Poll(res.stdout, jobs)
        if poll.qstat_rc != 0:
            raise TransientError(
                f"qstat failed on {self.transport.name} (exit {poll.qstat_rc}): "
                f"{short(res.stderr or poll.qstat)}"
            )
        if poll.unreadable:
            log.warning(
                "qstat on %s listed %d job(s) caseflow cannot read, e.g. %s",
                self.transport.name,
                len(poll.unreadable),
                quote_start(poll.unreadable[0]),
            )
        return poll

    def job_status(self, poll: Poll, job: JobRef) -> JobStatus:
        n, jid = poll.index[job.case_id], job.task_id
        queued: Queued | None = poll.queued.get(jid)
        if queued is not None:
            if queued.name != job.label:
                return JobStatus(
                    NOT_FOUND,
                    f"grid engine job {jid} is not this case's (it is named "
                    f"{queued.name!r}, not {job.label})",
                )
            return queued_outcome(queued, poll.reasons.get(n, ()), poll.zone)
        if n not in poll.qacct:  # the poll script saw the id in qstat's answer, the parser not
            raise BadOutput(f"qstat lists job {jid} in a form caseflow cannot read")
        status = self._ended(job, poll.qacct[n], poll.exits.get(n), poll.zone)
        if status.outcome == NOT_FOUND and poll.unreadable:
            # one of the entries caseflow could not read may be this job's
            return JobStatus(
                UNREADABLE,
                f"qstat listed a job caseflow cannot read, maybe job {jid}: "
                f"{quote_start(poll.unreadable[0])}",
            )
        return status

    def _ended(
        self,
        job: JobRef,
        qacct: tuple[int, str],
        exit_line: str | None,
        zone: timezone | None = None,
    ) -> JobStatus:
        """A job qstat no longer lists. Its accounting record decides whether Grid Engine
        failed it (`failed` not 0: a qdel, a limit, a kill); else the exit code file its
        wrapper wrote gives the command's own code (the wrapper may not pass it on to Grid
        Engine: 99 and 100 mean "run again" and "error state" there). Grid Engine writes the
        record up to `accounting_flush_time` after the end (Debian: 15 s): until it comes,
        for at most `accounting_wait_seconds`, the job counts as running; then the exit code
        file decides alone, and without one the job vanished (a pending job deleted gets no
        record; a job killed as a whole writes no exit code: only its record tells)."""
        jid = job.task_id
        rc, text = qacct
        if rc != 0 and not NO_RECORD.search(text):
            raise BadOutput(f"qacct -j {jid} failed (exit {rc}): {short(text)}")
        records = [
            r
            for r in (parse_qacct(text) if rc == 0 else [])
            if r.get("jobnumber") == jid and r.get("jobname") == job.label
        ]
        words = (exit_line or "").split()
        code = None
        if len(words) == 2 and words[0] == jid and words[1].lstrip("-").isdigit():
            code = int(words[1])
        if records:
            self.unaccounted.pop(jid, None)
            status = accounted_outcome(jid, records[-1], zone)
            if code is None or status.exit_code is None:  # (failed: Grid Engine's verdict)
                return status
            return replace(_exit_status(jid, code, ""), started=status.started, ended=status.ended)
        if words and code is None and (len(words) != 2 or words[0] == jid):
            # the file is this job's (or not in caseflow's form) but its code cannot be read:
            # not "gone" (that would end the case as not found); the case is charged an attempt
            return JobStatus(
                UNREADABLE,
                f"the exit code file of grid engine job {jid} cannot be read: "
                f"{short(exit_line or '')!r}",
            )
        since = self.unaccounted.setdefault(jid, self.clock())
        waited = self.clock() - since
        if waited < self.accounting_wait:
            return JobStatus(
                RUNNING,
                f"ended; waiting for Grid Engine's accounting record ({waited:.0f} s of "
                f"backend.accounting_wait_seconds {self.accounting_wait:.0f})",
            )
        self.unaccounted.pop(jid, None)
        if code is not None:
            return _exit_status(
                jid, code, " (its exit code file; Grid Engine has no accounting record of it)"
            )
        return JobStatus(
            NOT_FOUND,
            f"Grid Engine no longer lists job {jid} ({job.label}), has no accounting record "
            f"of it and it left no exit code in {EXIT_FILE} (deleted before it started?)",
        )

    def polled(self, jobs: Sequence[JobRef], poll: Poll) -> None:
        """Keep the caseflow jobs that wait for a person (an error state, a hold)."""
        labels = {j.task_id: j.label for j in jobs}
        # a job no longer asked about (its case ended, or was stopped) waits for nothing
        self.unaccounted = {j: t for j, t in self.unaccounted.items() if j in labels}
        self.stuck = {
            q.id: q.state
            for q in poll.queued.values()
            if labels.get(q.id) == q.name and ("E" in q.state or "h" in q.state)
        }

    def notice(self) -> str | None:
        failing = sorted((jid for jid, s in self.stuck.items() if "E" in s), key=int)
        held = sorted((jid for jid, s in self.stuck.items() if "E" not in s), key=int)
        parts = []
        if failing:
            parts.append(
                f"{len(failing)} Grid Engine job(s) in ERROR state (Eqw: {', '.join(failing)}): "
                "they never start until a person clears the error (`qmod -cj ID`, the reason "
                "in `qstat -j ID`) or deletes the job (`qdel ID`)"
            )
        if held:
            parts.append(
                f"{len(held)} Grid Engine job(s) HELD ({', '.join(held)}): they wait for `qrls ID`"
            )
        return "; ".join(parts) or None

    def find(self, job: JobRef) -> str | None:
        """The job's id from the submit's record in the case folder, else from `qstat -j
        LABEL` (the answer to a submit was lost before the record was written)."""
        if not job.remote_path:
            return None
        res = self.transport.run(script_argv(FIND, "caseflow-find", job.remote_path, job.label))
        if res.returncode == 3:
            return None
        out = res.stdout.split()
        if res.returncode != 0 or len(out) != 1 or not out[0].isdigit():
            raise TransientError(
                f"finding the Grid Engine job {job.label} failed (exit {res.returncode}): "
                f"{short(res.stderr or res.stdout)}"
            )
        return out[0]


def _open(host: Any, transport: Transport) -> GridEngineBackend:
    return GridEngineBackend(transport, host.backend)


def _exit_status(jid: str, code: int, where: str) -> JobStatus:
    """The outcome of a job that ended with `code` (its command's own)."""
    if code == 0:
        return JobStatus(SUCCESS, f"grid engine job {jid} ended, exit code 0{where}", 0)
    why = ""
    if 128 < code < 128 + signal.NSIG:  # the shell's code for a command a signal ended
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        # SIGUSR2: a qdel (the job is submitted with -notify); SIGUSR1: a soft limit
        hint = {"SIGUSR2": ": a qdel", "SIGUSR1": ": a soft limit (s_rt, s_cpu, ...)"}
        why = f" ({name}{hint.get(name, '')})"
    return JobStatus(FAILURE, f"grid engine job {jid} ended, exit code {code}{why}{where}", code)


ADAPTER = BackendAdapter(
    config=GridEngineConfig,
    read=read_config,
    check_host=check_host,
    open=_open,
    tools=("qsub", "qstat", "qacct", "qdel", "sh", "awk", "grep", "tail", "id"),
)
