"""The case model: the callbacks the spec names, bound to one case for one step.

Callbacks never write the store themselves. They do their (idempotent) work and
record what must change; `persist`, the machine's after_state_change hook, then
writes the new state, those changes, the slot bookkeeping and the history row
in one transaction guarded by the state the case was loaded in.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Collection
from pathlib import Path

from transitions import EventData

from .. import casefolder, metrics
from ..backends import LOG_TAIL_BYTES, LOST, NOT_FOUND, JobRef, JobSpec, lost_cause
from ..errors import HostError, PermanentError, TransientError
from ..store import CaseRow
from ..text import plural
from .context import Core

log = logging.getLogger("caseflow.case")


def remote_name(row: CaseRow) -> str:
    """The case's folder name on the remote side: its id, its run after the first, and a tame
    form of its name. Each run has a folder of its own: a retry uploads the inbox folder as
    it is now, and nothing an earlier run left there (its upload, launch record, exit code)
    is taken for this run's."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", row.name).lstrip("-._")[:60] or "case"
    return f"{row.id}-{slug}" if row.run <= 1 else f"{row.id}-run{row.run}-{slug}"


def job_label(row: CaseRow, instance: str) -> str:
    """Unique per database, case and run: a re-run never adopts an earlier run's job."""
    return f"caseflow-{instance}-{row.id}-{row.run}"


def job_log_path(database: Path, row: CaseRow) -> Path:
    """Where the job's output of this run is kept, next to the database."""
    return Path(database).parent / "logs" / f"{row.id}-{row.run}.log"


def write_atomic(path: Path, text: str) -> None:
    """Write a job's log: bytes that are not UTF-8 came in as surrogates (surrogateescape)
    and go out as the same bytes (a job's log comes home byte for byte, issue 25)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate of another origin
        data = text.encode("utf-8", "replace")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def free_name(folder: Path, name: str, case_id: int, taken: Collection[str] = frozenset()) -> Path:
    """`folder/name`, or with the case id (and a counter) appended when that is taken:
    never a path that exists or that another case uses."""
    base = casefolder.short_name(name)
    candidates = itertools.chain(
        (base, f"{base}-{case_id}"), (f"{base}-{case_id}-{i}" for i in range(2, 1000))
    )  # made as tried: nearly always the first is free
    for candidate in candidates:
        path = folder / candidate
        if (
            str(path) not in taken
            and not os.path.lexists(path)
            and not os.path.lexists(folder / f".staging-{candidate}")
        ):
            return path
    raise PermanentError(f"no free name for {name!r} in {folder}")


def folder_stamp(path: Path) -> str:
    """The case folder's ctime (ns) when a case takes it: a folder made anew (deleted and
    copied in again) differs, even with the inode the file system reused."""
    return str(os.lstat(path).st_ctime_ns)


def job_ref(row: CaseRow, instance: str) -> JobRef:
    return JobRef(
        case_id=row.id,
        task_id=row.task_id or "",
        label=job_label(row, instance),
        remote_path=row.remote_path or "",
    )


class Case:
    """One case bound to the machine for one trigger. `engine` (the core's context,
    caseflow.core.context.Core) supplies the ports."""

    trigger: Callable[..., bool]  # added by the machine it is bound to (transitions)

    def __init__(self, row: CaseRow, engine: Core):
        self.row = row
        self.engine = engine
        self.changes: dict = {}
        self.slot_to_take: int | None = None
        self.release = False
        self.not_before: float | None = None  # set by a condition that says "not yet"

    def __repr__(self) -> str:
        return f"<Case {self.row.id} {self.row.name!r} {getattr(self, 'state', '?')}>"

    # -- the case's folder --------------------------------------------------------------
    def check_folder(self) -> Path:
        """The case's folder, if it is still the one the case took: the same inode and the
        same ctime as when it became stable (`folder_stamp`; a folder deleted and copied in
        again gets a new one even where ext4 reuses the inode, e.g. while the daemon was
        down), and no newer case made from a folder at that path. Otherwise the case ends:
        nothing of a replaced folder is validated or uploaded, and the folder there now is
        taken as a new case once quiet."""
        row, eng = self.row, self.engine
        path = Path(row.local_path)
        newer = eng.store.newer_case_at(row.id, row.local_path)
        if newer is not None:
            raise PermanentError(
                f"replaced by a new copy: the folder {row.local_path} was deleted and copied "
                f"in again, and the new copy is case {newer}"
            )
        if not path.is_dir() or path.is_symlink():
            raise PermanentError(f"the case folder {row.local_path} is gone")
        if casefolder.inode_of(path) != row.inode or (
            row.folder_stamp is not None and folder_stamp(path) != row.folder_stamp
        ):
            eng.forget_folder(row.local_path, row.inode)  # the next listing admits it anew
            eng.admission.rescan_soon()
            raise PermanentError(
                f"replaced by a new copy (or changed at its top level) after it was taken: "
                f"the folder {row.local_path} is no longer the one this case was admitted "
                "with; the folder there now becomes a case of its own once it is quiet"
            )
        return path

    # -- conditions --------------------------------------------------------------------
    def is_quiet(self, event: EventData) -> bool:
        """Nothing inside the folder changed for the quiet period (and it is still there).

        The period is measured on the monotonic clock: a step of the wall clock (NTP, a VM
        resumed) admitted a folder whose copy had paused. The wall-clock times (the watcher's
        last event, the newest ctime inside) only tell that something changed."""
        row, eng = self.row, self.engine
        path = Path(row.local_path)
        if not path.is_dir() or path.is_symlink() or casefolder.inode_of(path) != row.inode:
            eng.quiet_since.pop(row.id, None)
            raise PermanentError("folder removed before it was stable")
        fingerprint = casefolder.newest_change(path)
        activity = eng.last_activity(row.name)  # the watcher's last event, monotonic
        mono = eng.monotonic()
        known = eng.quiet_since.get(row.id)  # (fingerprint, last change, last look)
        if known is None:  # no look since a restart: the period starts now
            change = mono
        else:
            change = known[1]
            if fingerprint != known[0]:
                # a change the watcher saw has its time; one it missed happened by now
                seen = activity is not None and activity > known[2]
                change = max(change, activity) if seen and activity is not None else mono
        if activity is not None:
            change = max(change, activity)
        waited = mono - change
        if waited >= eng.config.quiet_seconds:
            eng.quiet_since.pop(row.id, None)
            self.changes["folder_stamp"] = folder_stamp(path)
            return True
        eng.quiet_since[row.id] = (fingerprint, change, mono)
        self.not_before = eng.clock() + eng.config.quiet_seconds - waited
        return False

    def take_slot(self, event: EventData) -> bool:
        """A free slot of the case's group exists; persist takes it atomically."""
        eng, group = self.engine, self.row.grp
        if group is None or eng.config.group(group) is None:
            raise PermanentError(
                f"group {group!r} is no longer configured; configured groups: "
                + ", ".join(g.name for g in eng.config.groups)
            )
        hosts = eng.health.usable_for(group)
        slot = eng.store.free_slot(group, hosts) if hosts else None
        if slot is None:
            return False
        self.slot_to_take = slot.id
        self.changes["host"] = slot.host
        where = f" on {slot.host}" if len(eng.hosts) > 1 else ""
        event.kwargs.setdefault(
            "detail",
            f"slot {group}[{slot.idx}]{where}" + (f" device {slot.device}" if slot.device else ""),
        )
        return True

    # -- before callbacks (the work) ---------------------------------------------------
    def validate_case(self, event: EventData) -> None:
        """The folder still exists, everything in it can be sent, and its group is known."""
        eng = self.engine
        path = self.check_folder()
        manifest = casefolder.scan(path)
        settings = casefolder.read_case_file(
            path, [g.name for g in eng.config.groups], eng.config.default_group
        )
        self.changes.update(
            grp=settings["group"],
            priority=settings["priority"],
            file_count=manifest.file_count,
            size_bytes=manifest.size_bytes,
        )

    def upload_case(self, event: EventData) -> None:
        eng, row = self.engine, self.row
        host = eng.host_of(row)
        # a fresh connection's login (4-5 round trips) while the case is scanned (10,000 files:
        # 55-85 ms), as rsync builds its file list while its ssh connects
        host.transport.connect_ahead()
        path = self.check_folder()
        manifest = casefolder.scan(path)
        remote = host.transport.path(remote_name(row))
        last = [0.0]

        def progress(sent: int, total: int) -> None:  # at most one store write a second
            now = time.monotonic()
            if now - last[0] >= 1.0:
                last[0] = now
                eng.store.set_progress(row.id, sent, total)

        started = time.monotonic()
        uploaded = host.transport.upload_dir(path, remote, manifest, progress=progress)
        self.check_folder()  # not replaced while it was sent (else: failure, the upload unused)
        if uploaded:
            metrics.uploaded(host.name, manifest.size_bytes, time.monotonic() - started)
        self.changes.update(
            remote_path=remote,
            host=host.name,
            file_count=manifest.file_count,
            size_bytes=manifest.size_bytes,
        )
        event.kwargs.setdefault(
            "detail",
            f"{plural(manifest.file_count, 'file')}, {plural(manifest.size_bytes, 'byte')}"
            f"{'' if uploaded else ' (already there)'}",
        )

    def submit_job(self, event: EventData) -> None:
        eng, row = self.engine, self.row
        host = eng.host_of(row)
        group = host.cfg.group(row.grp) if row.grp is not None else None
        env = {
            "CASEFLOW_CASE_ID": str(row.id),
            "CASEFLOW_CASE_NAME": row.name,
            "CASEFLOW_GPU_GROUP": row.grp or "",
            "CASEFLOW_GPU_SLOT": str(row.slot_index),
            "CASEFLOW_RUN": str(row.run),
        }
        device = row.slot_device or (
            group.device_of(row.slot_index) if group and row.slot_index is not None else None
        )
        assert row.remote_path is not None and row.grp is not None  # an uploaded case's
        job = JobSpec(
            case_id=row.id,
            label=job_label(row, eng.instance),
            remote_path=row.remote_path,
            group=row.grp,
            command=host.cfg.backend.command,
            env=env,
            priority=row.priority,
            device=device,
        )
        task_id = host.backend.submit(job)
        self.changes["task_id"] = task_id
        event.kwargs.setdefault("detail", f"task {task_id}")

    def fetch_results(self, event: EventData) -> None:
        """The job ended: bring its log and results home before the case's terminal state.

        Transient errors leave the case running (the engine retries with backoff);
        a permanent one ends it in failure with a reason saying what was not fetched.
        Only for the end of a job (`job_ended`), not for other ways out of running.
        """
        if not event.kwargs.get("job_ended"):
            return
        eng, row = self.engine, self.row
        lead = event.kwargs.get("lead", "")  # what the move says before the job's end
        ref = job_ref(row, eng.instance)
        host = eng.host_of(row)
        folder = eng.config.results.folder
        with_results = folder is not None and bool(row.remote_path)
        # a log the backend keeps in the case folder comes with the results (one command)
        log_file = host.backend.log_file(ref) if with_results else None
        text = None if log_file else self._job_log(ref)
        remote = row.remote_path
        if folder is None or not remote or not with_results:
            return
        target = Path(row.results_path) if row.results_path else None
        if target is None or target.parent != folder:
            target = free_name(folder, row.name, row.id, eng.store.results_paths())
            eng.store.set_results_path(row.id, row.state, str(target))  # before anything lands
        try:
            if log_file:
                count, text = host.transport.fetch_results_and_tail(
                    remote, target, eng.config.results.patterns, log_file, LOG_TAIL_BYTES
                )
                if text is None:  # not there, or not copied (a full disk): asked for alone
                    text = self._job_log(ref)
                else:
                    write_atomic(job_log_path(eng.config.database, row), text)
            else:
                count = host.transport.fetch_results(remote, target, eng.config.results.patterns)
        except PermanentError as exc:
            if log_file:  # the log is kept all the same (`caseflow show`), if it can be had
                with contextlib.suppress(TransientError, HostError):
                    self._job_log(ref)
            if row.job_outcome in (NOT_FOUND, LOST) or event.kwargs.get("requested"):
                # nothing more to lose (or the operator's cancel): say so and go on
                event.kwargs["detail"] = f"{lead}{row.job_detail}; no results: {exc}"
                return
            prefix = f"{row.job_detail}; " if row.job_detail and event.event.name == "fail" else ""
            raise PermanentError(f"{prefix}results could not be retrieved: {exc}") from exc
        if text is not None:
            log_name = "caseflow-job.log"
            if (target / log_name).exists():
                log_name = f"caseflow-job-run{row.run}.log"  # the job made one of that name
            write_atomic(target / log_name, text)
        self.changes.update(results_path=str(target), results_fetched=1)
        event.kwargs["detail"] = (
            f"{lead}{row.job_detail}; {count} result file{'' if count == 1 else 's'} in {target}"
        )

    def _job_log(self, ref: JobRef) -> str | None:
        """The job's log from its backend, kept where `caseflow show` finds it."""
        eng, row = self.engine, self.row
        try:
            text = eng.host_of(row).backend.job_log(ref)
        except PermanentError as exc:
            log.warning("case %s: the job log could not be fetched: %s", row.id, exc)
            return None
        if text is not None:
            write_atomic(job_log_path(eng.config.database, row), text)
        return text

    def kill_job(self, event: EventData) -> None:
        """Stop the job, if one runs that was not stopped before (caseflow.core.jobs.stop stops it
        first and fires the cancel once the job is gone, `job_ended`: then fetch_results
        brings its log and what it wrote)."""
        row, eng = self.row, self.engine
        if row.task_id and not event.kwargs.get("job_ended"):
            backend = eng.host_of(row).backend
            ref = job_ref(row, eng.instance)
            backend.cancel(ref)
            # what the job wrote until it was stopped is kept like a finished job's log
            # (`caseflow show`); a log that cannot be had does not stop the cancel
            try:
                text = backend.job_log(ref)
            except (PermanentError, TransientError, HostError) as exc:
                log.warning(
                    "case %s: the cancelled job's log could not be fetched: %s", row.id, exc
                )
                text = None
            if text is not None:
                write_atomic(job_log_path(eng.config.database, row), text)
        self.changes["reason"] = "cancelled"

    def reset_for_retry(self, event: EventData) -> None:
        if self.row.slot_id is not None:  # kept for an earlier job that may still run
            raise TransientError(
                "its earlier job is still being stopped (the case keeps its "
                "slot until then); the retry follows"
            )
        if self.row.wrapup:  # the earlier run's clean-up, archiving and hook come first
            raise TransientError("the earlier run's wrap-up is not done yet; the retry follows")
        self._keep_earlier_results(self.row.results_path)
        path = Path(self.row.local_path)  # taken again as it is now
        self.changes["folder_stamp"] = folder_stamp(path) if path.is_dir() else None
        self.changes["reruns"] = 0  # a person's retry starts the infrastructure's budget anew
        self._new_run()

    def reset_for_rerun(self, event: EventData) -> None:
        """The job was taken away by the infrastructure (caseflow.core.jobs.finish): a new run
        of the same case folder (the one the case took: a folder replaced since ends the case
        at its validation, caseflow.core.case_model.Case.check_folder). What the lost run
        wrote was fetched (fetch_results, before this); it is kept as a retry keeps it, and its
        remote folder is removed where `remote_cleanup: always` says so."""
        row, eng = self.row, self.engine
        results = self.changes.get("results_path", row.results_path)
        fetched = self.changes.get("results_fetched", row.results_fetched)
        if row.remote_path and fetched and eng.config.finish.remote_cleanup == "always":
            try:
                eng.host_of(row).transport.remove_tree(row.remote_path)
            except PermanentError as exc:  # kept; the new run has a folder of its own
                log.warning(
                    "case %s: the lost run's remote folder was not removed: %s", row.id, exc
                )
        self._keep_earlier_results(results)
        self.changes.update(reruns=row.reruns + 1, results_path=results)
        self._new_run()
        self.changes["remote_path"] = None  # the new run's upload sets its own
        metrics.rerun(row.slot_host or row.host or "", lost_cause(row.job_detail or ""))

    def _new_run(self) -> None:
        self.changes.update(
            host=None,
            reason=None,
            task_id=None,
            stop_since=None,
            stop_sent=0,
            last_error=None,
            run=self.row.run + 1,
            job_outcome=None,
            job_detail=None,
            exit_code=None,
            job_started=None,
            job_ended=None,
            job_times_source=None,
            results_fetched=0,
            wrapup=0,
            wrapup_note=None,
        )

    def _keep_earlier_results(self, results_path: str | None) -> None:
        """A retry or a rerun is a new run; the earlier run's results (`results_path`, and
        the log with them) are kept: results/<name> is renamed results/<name>.run-<its run>,
        and the new run's results come to results/<name> again. (Its log also stays in
        logs/<id>-<run>.log.)"""
        row, folder = self.row, self.engine.config.results.folder
        if not results_path or folder is None:
            return
        current = Path(results_path)
        if current.parent != folder or not os.path.lexists(current):
            return
        kept = free_name(
            folder, f"{current.name}.run-{row.run}", row.id, self.engine.store.results_paths()
        )
        try:
            os.rename(current, kept)
        except OSError as exc:
            raise TransientError(
                f"the earlier run's results in {current} could not be kept as {kept}: {exc}"
            ) from exc
        log.info("case %s %r: run %s's results kept in %s", row.id, row.name, row.run, kept)

    # -- state callbacks ---------------------------------------------------------------
    def release_slot(self, event: EventData) -> None:
        """`keep_slot`: the case ends while its job may still run (it could not be stopped):
        the slot stays held until the wrap-up has stopped the job or seen it end."""
        self.release = not event.kwargs.get("keep_slot")

    # -- the machine's after_state_change hook -------------------------------------------
    def persist(self, event: EventData) -> None:
        eng, row = self.engine, self.row
        kwargs = event.kwargs
        if kwargs.get("reason"):
            self.changes["reason"] = kwargs["reason"]
        if kwargs.get("requested"):
            self.changes["request"] = None
        detail = kwargs.get("detail") or self.changes.get("reason")
        # transitions sets both before it calls `before` callbacks
        assert event.transition is not None and event.event is not None
        src, dst, trigger = event.transition.source, event.transition.dest, event.event.name
        assert dst is not None  # every transition of the spec has a `dest` (spec.py requires it)
        if dst in eng.spec.terminal_states:  # clean-up, archiving and hook follow, persisted
            self.changes.update(wrapup=1, wrapup_note=None)
        eng.store.commit_transition(
            row.id,
            src,
            dst,
            trigger,
            eng.clock(),
            self.changes,
            take_slot=self.slot_to_take,
            release_slot=self.release,
            detail=detail,
        )
        log.info(
            "case %s %r: %s -> %s (%s)%s",
            row.id,
            row.name,
            src,
            dst,
            trigger,
            f": {detail}" if detail else "",
            extra={
                "case_id": row.id,
                "case_name": row.name,
                "from_state": src,
                "to_state": dst,
                "trigger": trigger,
            },
        )
        if self.release:
            eng.wake()  # a slot is free: cases waiting for one need not wait for the tick
