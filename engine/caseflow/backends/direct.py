"""The `direct` runner: no queue, the job is started detached in its case folder.

It keeps its bookkeeping in `<case folder>/.caseflow/`: `pid` (the job's
session leader), `exit_code` (written when the job ends), `started` and `ended` (when, as Unix
time: the job's durations), `boot_id` (the host's boot when the job was launched) and `job.log`
(stdout and stderr). A job gone without an exit code on a host whose boot id has changed since
was lost to a reboot (LOST: the engine runs the case again); gone on the same boot, something
killed it (NOT_FOUND). All of it goes through the
transport's `run` with argument lists; the shell scripts (scripts/direct-*.sh) take every
variable part as a positional parameter, so nothing from a case name or path is ever parsed by
a shell.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ..config.reader import Section
from ..errors import PermanentError, TransientError
from ..settings import setting
from ..transports.shell import script
from . import (
    FAILURE,
    LOG_TAIL_BYTES,
    LOST,
    NOT_FOUND,
    RUNNING,
    SUCCESS,
    UNREADABLE,
    BackendAdapter,
    BackendConfig,
    JobRef,
    JobSpec,
    JobStatus,
    QueueBackend,
)
from .scripted import NO_FOLDER, job_argv
from .times import epoch

JOB_LOG = ".caseflow/job.log"  # the job's stdout and stderr (scripts/direct-launch.sh)
MARK = "caseflow-job"  # the job wrapper's $0, so a reused pid is not taken for the job

# the remote scripts: scripts/direct-*.sh
LAUNCH = script(__package__, "direct-launch.sh")
STATUS = script(__package__, "direct-status.sh", "job-group.sh")
CANCEL = script(__package__, "direct-cancel.sh", "job-group.sh")
# $1 = case folder: the pid its launch wrote; exit 3: never launched; exit 4: not written yet
FIND = (
    'cd -- "$1" 2>/dev/null && [ -d .caseflow/launched ] || exit 3; '
    '[ -s .caseflow/pid ] || exit 4; read -r pid < .caseflow/pid; echo "$pid"'
)
# The bytes of one status command. sshd hands the whole command line to the user's shell as
# one argument, and Linux takes at most 128 KiB in one (MAX_ARG_STRLEN): 1,000 jobs are about
# 60 KB; more go in several commands.
COMMAND_BYTES = 100_000


BOOT_ID = "/proc/sys/kernel/random/boot_id"  # Linux: a new random id at every boot


class DirectBackend(QueueBackend):
    def __init__(self, transport, boot_id_file: str = BOOT_ID):
        self.transport = transport
        self.boot_id_file = boot_id_file  # on the host: read at each launch and each poll

    def submit(self, job: JobSpec) -> str:
        # never repeated by the transport: a step tried again later finds the first launch
        res = self.transport.run_once(
            [
                "sh",
                "-c",
                LAUNCH,
                "caseflow-launch",
                job.remote_path,
                f"{MARK}-{job.case_id}",
                job.label,
                self.boot_id_file,
                # CASEFLOW_JOB: how the job's processes are told from others once its
                # wrapper is gone (scripts/job-group.sh)
                *job_argv(job, env={"CASEFLOW_JOB": job.label}),
            ]
        )
        pid = res.stdout.strip()
        if res.returncode == NO_FOLDER:
            raise PermanentError(f"the uploaded case folder is missing on {self.transport.name}")
        if res.returncode != 0 or not pid.isdigit():
            raise TransientError(
                f"starting the job failed (exit {res.returncode}): "
                f"{res.stderr.strip() or res.stdout.strip()}"
            )
        return pid

    def status(self, jobs: Sequence[JobRef]) -> dict[int, JobStatus]:
        """One command for all the jobs (several beyond COMMAND_BYTES). Each job goes as its
        pid (the task id; "-" when it is not a pid: the script reads the pid file), its case
        folder and its label."""
        out: dict[int, JobStatus] = {}
        for batch in _batches(jobs, len(self.boot_id_file.encode())):
            args = [self.boot_id_file]
            for j in batch:
                args += [j.task_id if j.task_id.isdigit() else "-", j.remote_path, j.label]
            res = self.transport.run(["sh", "-c", STATUS, "caseflow-status", *args])
            if res.returncode != 0:
                raise TransientError(
                    f"job status query failed (exit {res.returncode}): {res.stderr.strip()}"
                )
            out.update(parse_status(res.stdout, batch, self.transport.name))
        return out

    def find(self, job: JobRef) -> str | None:
        """The pid the launch wrote in the case folder (one folder per run: its launch)."""
        if not job.remote_path:
            return None
        res = self.transport.run(["sh", "-c", FIND, "caseflow-find", job.remote_path])
        out = res.stdout.strip()
        if res.returncode == 3:
            return None
        if res.returncode == 4:  # launched, its pid not written yet: asked again later
            raise TransientError(f"the job in {job.remote_path} is starting; its pid follows")
        if res.returncode != 0 or not out.isdigit():
            raise TransientError(
                f"reading the job's pid failed (exit {res.returncode}): {res.stderr.strip()}"
            )
        return out

    def job_log(self, job: JobRef) -> str | None:
        res = self.transport.run(
            ["tail", "-c", str(LOG_TAIL_BYTES), "--", f"{job.remote_path}/{JOB_LOG}"]
        )
        return res.stdout if res.returncode == 0 else None

    def log_file(self, job: JobRef) -> str | None:
        return JOB_LOG

    def cancel(self, job: JobRef, force: bool = False) -> None:
        """TERM (KILL when `force`) to the job's process group, if the job is still this
        case's (its wrapper's marker and folder, or its label: never another case's job after
        a pid was reused). A job whose id was never stored (a submit whose answer was lost)
        is found by the pid its launch wrote in the case folder."""
        if not job.remote_path:
            return
        res = self.transport.run(
            [
                "sh",
                "-c",
                CANCEL,
                "caseflow-cancel",
                job.task_id if job.task_id.isdigit() else "-",
                job.remote_path,
                f"{MARK}-{job.case_id}",
                job.label,
                "KILL" if force else "TERM",
            ]
        )
        if res.returncode != 0:
            raise TransientError(
                f"stopping job {job.task_id or job.label} failed: {res.stderr.strip()}"
            )


def _batches(jobs: Sequence[JobRef], fixed: int = 0) -> list[list[JobRef]]:
    """The jobs in batches whose status command stays within COMMAND_BYTES; `fixed`: the
    bytes of the command's other arguments."""
    batches: list[list[JobRef]] = []
    size = COMMAND_BYTES
    for j in jobs:
        cost = len(shlex.quote(j.remote_path).encode()) + len(j.task_id) + len(j.label) + 6
        if size + cost > COMMAND_BYTES - len(STATUS.encode()) - fixed - 100:
            batches.append([])
            size = 0
        batches[-1].append(j)
        size += cost
    return batches


_RUNNING = JobStatus(RUNNING, "running")


def parse_status(text: str, jobs: Sequence[JobRef], host: str = "the host") -> dict[int, JobStatus]:
    """The status script's lines -> every job's status. A line that cannot be read, or no line
    at all, is that job's problem alone (UNREADABLE): the others keep their real outcomes.
    `host`: the host's name, as a LOST job's detail names it."""
    lines: dict[int, list[str]] = {}
    for line in text.split("\n"):  # the shell's lines (splitlines also splits at \r, \f...)
        index = line.split(" ", 1)[0]
        if index.isdigit() and int(index) < len(jobs):
            lines.setdefault(int(index), []).append(line)
    out: dict[int, JobStatus] = {}
    for i, job in enumerate(jobs):
        said = lines.get(i, [])
        parts = said[0].split() if len(said) == 1 else []
        if parts[1:] == ["running"]:
            out[job.case_id] = _RUNNING
        elif parts[1:] == ["gone"]:
            out[job.case_id] = JobStatus(
                NOT_FOUND, "the job's process is gone and left no exit code"
            )
        elif parts[1:] == ["rebooted"]:
            out[job.case_id] = JobStatus(
                LOST, f"host {host} rebooted while the job ran (boot id changed)"
            )
        elif len(parts) in (3, 5) and parts[1] == "exit" and re.fullmatch(r"-?\d{1,9}", parts[2]):
            code = int(parts[2])
            started, ended = (epoch(t) for t in parts[3:]) if len(parts) == 5 else (None, None)
            out[job.case_id] = (
                JobStatus(SUCCESS, "exit code 0", 0, started, ended)
                if code == 0
                else JobStatus(FAILURE, f"job exited with code {code}", code, started, ended)
            )
        else:
            what = (
                f"printed {said[0][:120]!r}"
                if len(said) == 1
                else f"printed {len(said)} lines"
                if said
                else "printed nothing"
            )
            out[job.case_id] = JobStatus(
                UNREADABLE, f"the status script {what} for the job in {job.remote_path}"
            )
    return out


def _absolute(value: str) -> str | None:
    return None if value.startswith("/") else "must be an absolute path on the host"


@dataclass(frozen=True)
class DirectConfig(BackendConfig):
    """`kind: direct`."""

    boot_id_file: str = setting(
        BOOT_ID,
        _absolute,
        "the file on the host whose first line changes at every boot: a job gone without an "
        "exit code after it changed was lost to a reboot, and its case runs again",
    )


def read_config(section: Section) -> DirectConfig:
    return DirectConfig(**section.core, **section.reader.settings(DirectConfig))


# the scripts need setsid (a session of the job's own) and sh
ADAPTER = BackendAdapter(
    config=DirectConfig,
    read=read_config,
    tools=("setsid", "sh"),
    open=lambda host, transport: DirectBackend(transport, host.backend.boot_id_file),
)
