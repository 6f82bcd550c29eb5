"""After a case reached its terminal state: remote clean-up, archiving, the on_finish hook.

The terminal transition sets the case's `wrapup` flag in the same transaction, so
the wrap-up survives a crash: it runs in the worker pool until it is done. A case that
ended while its job could not be stopped kept its slot: the wrap-up first stops the job
(or sees it end) and frees the slot. Each
step is safe to repeat: the remote folder is removed only when the results are
home (and removing it twice is harmless); the case folder's new place is stored
as soon as it is moved; the hook runs last (after a crash in between it may run
a second time). Nothing here changes the case's state: a problem is noted on the
case (`caseflow show`) and logged.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

from .. import casefolder
from ..errors import HostError, PermanentError, TransientError
from ..store import CaseRow
from . import jobs
from .case_model import folder_stamp, free_name, remote_name
from .context import Core

log = logging.getLogger("caseflow.wrapup")

OUTPUT_LIMIT = 2000  # characters of a failed hook's output kept in the note


def wrap_up(core: Core, row: CaseRow) -> None:
    notes: list[str] = []
    if not jobs.stop_kept(core, row):
        return  # its job may still run: the slot stays held, tried again later
    if not _clean_remote(core, row, notes):
        return  # the host is unreachable: tried again later
    row = _archive(core, row, notes)
    _run_hook(core, row, notes)
    core.store.wrapup_progress(row.id, row.state, note="; ".join(notes) or None, done=True)


def cleanup_wanted(mode: str, row: CaseRow, succeeded: bool) -> bool:
    """Remove the remote case folder? Only once the results are safely home."""
    if mode == "never" or not row.remote_path or not row.results_fetched:
        return False
    return mode == "always" or (mode == "on_success" and succeeded)


def _succeeded(core: Core, row: CaseRow) -> bool:
    """The case ended where the spec's job-success trigger leads."""
    return row.state in core.spec.succeeded_states


def _clean_remote(core: Core, row: CaseRow, notes: list[str]) -> bool:
    if not row.remote_path and (row.slot_host or row.host):
        return _discard_upload(core, row, notes)
    if not row.remote_path or not cleanup_wanted(
        core.config.finish.remote_cleanup, row, _succeeded(core, row)
    ):
        return True
    try:
        core.host_of(row).transport.remove_tree(row.remote_path)
    except (TransientError, HostError) as exc:
        retry_at = core.clock() + core.config.retry.max_seconds
        log.warning(
            "case %s: the remote folder %s could not be removed yet: %s",
            row.id,
            row.remote_path,
            exc,
        )
        core.store.wrapup_progress(
            row.id, row.state, retry_at=retry_at, note=f"removing the remote folder: {exc}"
        )
        return False
    except PermanentError as exc:
        notes.append(f"remote folder not removed: {exc}")
        log.warning(
            "case %s: the remote folder %s was not removed: %s", row.id, row.remote_path, exc
        )
        return True
    log.info("case %s: removed the remote folder %s", row.id, row.remote_path)
    return True


def _discard_upload(core: Core, row: CaseRow, notes: list[str]) -> bool:
    """The case ended before its upload was complete: what an interrupted attempt left for a
    later one to resume is not needed now (a retry of the case uploads again)."""
    try:
        transport = core.host_of(row).transport
        transport.discard_upload(transport.path(remote_name(row)))
    except (TransientError, HostError) as exc:
        core.store.wrapup_progress(
            row.id,
            row.state,
            retry_at=core.clock() + core.config.retry.max_seconds,
            note=f"removing the unfinished upload: {exc}",
        )
        return False
    except PermanentError as exc:
        notes.append(f"unfinished upload not removed: {exc}")
    return True


def _archive(core: Core, row: CaseRow, notes: list[str]) -> CaseRow:
    finish = core.config.finish
    dest = finish.archive_done if _succeeded(core, row) else finish.archive_failed
    if dest is None:
        return row
    src = Path(row.local_path)
    if src.parent == dest:
        return row  # already there (a repeated wrap-up)
    newer = core.store.newer_case_at(row.id, row.local_path)
    if newer is not None:  # the folder there now is a new copy (its inode may be the old one)
        notes.append(f"case folder not archived: {src} is now the folder of case {newer}")
        return row
    if (
        row.folder_stamp is not None
        and src.is_dir()
        and not src.is_symlink()
        and folder_stamp(src) != row.folder_stamp
    ):
        notes.append(f"case folder not archived: {src} was replaced (or changed) since")
        return row
    if not src.is_dir() or src.is_symlink() or casefolder.inode_of(src) != row.inode:
        moved = _moved_before(dest, row)
        if moved is not None:  # an earlier wrap-up renamed it, then the daemon died
            core.store.wrapup_progress(row.id, row.state, local_path=str(moved))
            core.forget_folder(str(src), row.inode)
            log.info(
                "case %s %r: case folder found in %s, moved there before a restart",
                row.id,
                row.name,
                moved,
            )
            return core.store.get(row.id) or row
        # gone, or another folder of that name now (a new case, whose folder stays)
        notes.append(f"case folder not archived: {src} is no longer there")
        return row
    try:
        dest.mkdir(parents=True, exist_ok=True)  # made by `caseflow run`; again if it went
        target = free_name(dest, row.name, row.id)
        os.rename(src, target)
    except PermanentError as exc:
        notes.append(f"case folder not archived: {exc}")
        log.warning("case %s: could not move %s to %s: %s", row.id, src, dest, exc)
        return row
    except OSError as exc:
        why = str(exc)
        if isinstance(exc, PermissionError) and os.access(src.parent, os.W_OK):
            # the inbox is writable, so it is the folder: moving a folder into another one
            # changes its `..`, which needs write permission on the folder itself
            why = (
                f"permission denied: moving {src} into {dest} needs write permission on the "
                "case folder itself; in a shared inbox, whoever drops a case gives it to the "
                "group (chmod g+w: `caseflow help service`)"
            )
        notes.append(f"case folder not archived: {why}")
        log.warning("case %s: could not move %s to %s: %s", row.id, src, dest, why)
        return row
    core.store.wrapup_progress(row.id, row.state, local_path=str(target))
    core.forget_folder(str(src), row.inode)
    log.info("case %s %r: case folder moved to %s", row.id, row.name, target)
    return core.store.get(row.id) or row


def _moved_before(dest: Path, row: CaseRow) -> Path | None:
    """The case's folder in `dest` under a name the archive would have given it (free_name's
    first two), when its inode is the case's: renamed there by a wrap-up that stopped before
    it was recorded (a rename keeps the inode)."""
    base = casefolder.short_name(row.name)
    for name in (base, f"{base}-{row.id}"):
        path = dest / name
        if path.is_dir() and not path.is_symlink() and casefolder.inode_of(path) == row.inode:
            return path
    return None


def hook_env(row: CaseRow) -> dict[str, str]:
    return {
        "CASEFLOW_CASE_ID": str(row.id),
        "CASEFLOW_CASE_NAME": row.name,
        "CASEFLOW_STATE": row.state,
        "CASEFLOW_REASON": row.reason or "",
        "CASEFLOW_RESULTS": row.results_path if row.results_fetched and row.results_path else "",
        "CASEFLOW_EXIT_CODE": "" if row.exit_code is None else str(row.exit_code),
        "CASEFLOW_CASE_FOLDER": row.local_path,
        "CASEFLOW_RUN": str(row.run),
    }


def _run_hook(core: Core, row: CaseRow, notes: list[str]) -> None:
    finish = core.config.finish
    if not finish.on_finish:
        return
    note = run_command(
        finish.on_finish,
        hook_env(row),
        core.config.path.parent,
        finish.on_finish_timeout_seconds,
        f"case {row.id}: on_finish hook",
    )
    if note:
        notes.append(note)


def run_command(
    command: str | tuple[str, ...], env: dict[str, str], cwd: Path, timeout: float, what: str
) -> str | None:
    """Run a hook (a shell string or an argument list) with `env` added, in its own session,
    killed after `timeout` s; its output goes to the log. Returns a note when it failed."""
    argv = list(command) if isinstance(command, tuple) else ["sh", "-c", command]
    name = what.rsplit(": ", 1)[-1]
    try:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        log.error("%s could not start: %s", what, exc)
        return f"{name} could not start: {exc.strerror or exc}"
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        log.error("%s did not finish within %.0f s; killed", what, timeout)
        return f"{name} killed after {timeout:.0f} s"
    text = out.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        tail = text[-OUTPUT_LIMIT:]
        log.error("%s exited %s%s", what, proc.returncode, f"\n{tail}" if tail else "")
        return f"{name} exited {proc.returncode}" + (f": {tail}" if tail else "")
    log.info("%s done%s", what, f": {text[-300:]}" if text else "")
    return None


def host_paused(core: Core, host: str, problem: str) -> None:
    """Work on a host paused: run the on_host_paused hook, if any, in a thread of its own
    (the tick and the workers do not wait for it)."""
    command = core.config.finish.on_host_paused
    if not command:
        return
    env = {
        "CASEFLOW_HOST": host,
        "CASEFLOW_PROBLEM": problem,
        "CASEFLOW_CONFIG": str(core.config.path),
    }
    threading.Thread(
        target=run_command,
        name="caseflow-host-hook",
        daemon=True,
        args=(
            command,
            env,
            core.config.path.parent,
            core.config.finish.on_finish_timeout_seconds,
            f"host {host}: on_host_paused hook",
        ),
    ).start()
