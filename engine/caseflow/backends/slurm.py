"""The `slurm` backend: each case is one Slurm batch job, submitted with `sbatch`.

It is a `ScriptedBackend` (scripted.py): every call is ONE remote command through the
transport, a small `sh` script that takes every variable part (case folder, job name, job id,
the job's environment) as a positional parameter, so nothing from a case name or path is ever
parsed by a shell.

- The job's name is the case's label (`caseflow-<instance>-<case id>-<run>`). Before submitting,
  the submit script looks for a job of that name (the record `.caseflow/slurm-job` in the case
  folder, then `squeue --name`) and adopts it: a case never gets two jobs, even when caseflow
  died between `sbatch` and recording the id.
- The batch script is caseflow's own wrapper (`.caseflow/slurm-job.sh`, no case data in it); the
  job's command line `env CASEFLOW_...=... COMMAND` is passed as the script's arguments (sbatch
  keeps them verbatim: quotes, commas, newlines). The wrapper records "NAME ID" in
  `.caseflow/slurm-job` when it starts and "ID EXIT_CODE" in `.caseflow/slurm-exit_code` when the
  command ends; stdout and stderr go to `.caseflow/slurm.out`. CUDA_VISIBLE_DEVICES is Slurm's
  (from the GPUs it allocated), never caseflow's.
- Polling is one command per host per tick: `squeue -j` for caseflow's own job ids in a text
  format (not `squeue --json`: in 22.05 it lists every job on the cluster and ignores filters),
  and only for the ids it no longer lists, `sacct` (the accounting database, else `sacct -c`, the
  completion log) and the exit code files. What cannot be read about one job is that job's
  answer alone (UNREADABLE); every other job gets its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..errors import TransientError
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
from .output import BadOutput, quote_start
from .scripted import ScriptedBackend, script_argv, short
from .scripted import job_argv as command_line
from .slurm_options import SlurmConfig, check_host, read_config
from .slurm_status import RUNNING_STATES, Poll, ended, squeue_outcome

log = logging.getLogger("caseflow.slurm")

BOOKKEEPING = ".caseflow"
OUTPUT = f"{BOOKKEEPING}/slurm.out"
EXIT_FILE = f"{BOOKKEEPING}/slurm-exit_code"
WRAPPER = f"{BOOKKEEPING}/slurm-job.sh"

# The remote scripts: scripts/slurm-*.sh. The batch script (the same for every case) is written
# to the case folder as it is; its arguments are the job's command line.
JOB_WRAPPER = source(__package__, "slurm-job.sh")
SUBMIT = script(__package__, "slurm-submit.sh")
POLL = script(__package__, "slurm-poll.sh")
CANCEL = script(__package__, "slurm-cancel.sh")

# sbatch's messages that are worth trying again; anything else it refuses is permanent
TRANSIENT_SBATCH = (
    "Unable to contact",
    "timed out",
    "temporarily",
    "Connection refused",
    "Zero Bytes were transmitted",
    "Communication",
    "try again",
    "Resource temporarily unavailable",
    "Slurm backup controller",
)


def job_argv(job: JobSpec) -> list[str]:
    """The job's command line: its environment (without the slot's device: Slurm sets
    CUDA_VISIBLE_DEVICES from the GPUs it allocated) and its command."""
    return command_line(job, device=False)


def _slurm_path(path: str) -> str:
    """A path for sbatch's --output: `%` starts one of Slurm's file name patterns."""
    return path.replace("%", "%%")


class SlurmBackend(ScriptedBackend[Poll]):
    queue = "Slurm"
    QUEUE_TOOLS = ("sbatch", "squeue", "sacct", "scancel")
    RECORD = "slurm-job"
    LOG = OUTPUT
    TRANSIENT_REFUSALS = TRANSIENT_SBATCH

    def __init__(self, transport: Transport, backend_config: SlurmConfig | None = None):
        super().__init__(transport)
        self.config = backend_config

    def sbatch_args(self, job: JobSpec) -> list[str]:
        options = self.config.slurm_options(job.group).sbatch_args() if self.config else []
        return [
            f"--job-name={job.label}",
            f"--chdir={job.remote_path}",
            f"--output={_slurm_path(job.remote_path)}/{OUTPUT}",
            *options,
            f"{job.remote_path}/{WRAPPER}",
            *job_argv(job),
        ]

    # -- the commands --------------------------------------------------------------------
    def submit_command(self, job: JobSpec) -> list[str]:
        # sent once (the base's run_once): while a first sbatch may still be on its way, a
        # repeat would not find its job yet and add a second; the step tries again later
        return script_argv(
            SUBMIT, "caseflow-sbatch", job.remote_path, job.label, JOB_WRAPPER,
            *self.sbatch_args(job),
        )  # fmt: skip

    def poll_command(self, jobs: Sequence[JobRef]) -> list[str]:
        return script_argv(
            POLL, "caseflow-poll", *[a for j in jobs for a in (j.task_id, j.remote_path)]
        )

    def cancel_command(self, job: JobRef, force: bool) -> list[str]:
        """scancel (Slurm sends SIGTERM, then SIGKILL after its KillWait); `force`: SIGKILL
        to the job's processes at once (scancel --signal=KILL)."""
        kill = ["--signal=KILL", "--full"] if force else []
        return script_argv(CANCEL, "caseflow-scancel", job.task_id, job.label, *kill)

    # -- the answers ---------------------------------------------------------------------
    def read_poll(self, res: RunResult, jobs: Sequence[JobRef]) -> Poll:
        poll = Poll(res.stdout, jobs)
        # one id asked and Slurm has forgotten it: squeue fails, saying so; nothing is listed
        if poll.squeue_rc != 0 and "Invalid job id" not in res.stderr:
            raise TransientError(
                f"squeue failed on {self.transport.name} (exit "
                f"{poll.squeue_rc}): {short(res.stderr or res.stdout)}"
            )
        if poll.unreadable:
            log.warning(
                "squeue on %s printed %d line(s) caseflow cannot read, e.g. %s",
                self.transport.name,
                len(poll.unreadable),
                quote_start(poll.unreadable[0]),
            )
        return poll

    def job_status(self, poll: Poll, job: JobRef) -> JobStatus:
        status = self._outcome(
            job,
            poll.queue.get(job.task_id),
            poll.exits.get(poll.positions[job.case_id]),
            poll.sacct.get(job.task_id, []),
            poll.missing is not None and job.task_id in poll.missing,
        )
        if status.outcome == NOT_FOUND and poll.unreadable and job.task_id not in poll.queue:
            # one of the lines caseflow could not read may be this job's
            return JobStatus(
                UNREADABLE,
                f"squeue printed a line caseflow cannot read, maybe job {job.task_id}'s: "
                f"{quote_start(poll.unreadable[0])}",
            )
        return status

    def _outcome(
        self,
        job: JobRef,
        queued: dict | None,
        exit_line: str | None,
        accounted: list,
        asked_sacct: bool,
    ) -> JobStatus:
        jid = job.task_id
        if queued is not None:
            if queued.get("name") != job.label:
                return JobStatus(
                    NOT_FOUND,
                    f"slurm job {jid} is not this case's (it is named "
                    f"{queued.get('name')!r}, not {job.label})",
                )
            return squeue_outcome(jid, queued)
        if not asked_sacct:  # the poll script saw the id in squeue's output, the parser did not
            raise BadOutput(f"squeue lists job {jid} in a form caseflow cannot read")
        words = (exit_line or "").split()
        exited = len(words) == 2 and words[0] == jid and words[1].lstrip("-").isdigit()
        ours = [a for a in accounted if a[0] == job.label]
        if ours:
            _, state, code, signal, started, stopped, nodes = ours[-1]
            if state not in RUNNING_STATES:
                return ended(jid, state, code, signal, started, stopped, nodes)
            if not exited:  # accounting says it runs, though squeue lost sight of it
                return JobStatus(RUNNING, f"{state} (says sacct; squeue does not list it)")
        if exited:
            code = int(words[1])
            where = "its exit code file; Slurm no longer lists it"
            if code == 0:
                return JobStatus(SUCCESS, f"slurm job {jid} ended, exit code 0 ({where})", 0)
            return JobStatus(FAILURE, f"slurm job {jid} ended, exit code {code} ({where})", code)
        if words and (len(words) != 2 or words[0] == jid):
            # the file is this job's (or not in caseflow's form), but its code cannot be read:
            # not "gone" (that would end the case as not found); the case is charged an attempt
            return JobStatus(
                UNREADABLE,
                f"the exit code file of slurm job {jid} cannot be read: {short(exit_line or '')!r}",
            )
        return JobStatus(
            NOT_FOUND,
            f"Slurm no longer knows job {jid} ({job.label}) and it left "
            f"no exit code in {EXIT_FILE}",
        )


def _open(host: Any, transport: Transport) -> SlurmBackend:
    return SlurmBackend(transport, host.backend)


ADAPTER = BackendAdapter(
    config=SlurmConfig,
    read=read_config,
    check_host=check_host,
    open=_open,
    tools=("sbatch", "squeue", "sacct", "scancel", "sh", "tr", "grep", "tail"),
)
