"""After a case reached its terminal state: remote clean-up, archiving, the on_finish hook.

The terminal transition sets the case's `wrapup` flag in the same transaction, so
the wrap-up survives a crash: it runs in the worker pool until it is done. Each
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
from pathlib import Path

from .case_model import free_name, remote_name
from .errors import HostError, PermanentError, TransientError
from .store import CaseRow

log = logging.getLogger("caseflow.wrapup")

OUTPUT_LIMIT = 2000  # characters of a failed hook's output kept in the note


def wrap_up(engine, row: CaseRow) -> None:
    notes: list[str] = []
    if not _clean_remote(engine, row, notes):
        return  # the host is unreachable: tried again later
    row = _archive(engine, row, notes)
    _run_hook(engine, row, notes)
    engine.store.wrapup_progress(row.id, row.state, note="; ".join(notes) or None, done=True)


def cleanup_wanted(mode: str, row: CaseRow) -> bool:
    """Remove the remote case folder? Only once the results are safely home."""
    if mode == "never" or not row.remote_path or not row.results_fetched:
        return False
    return mode == "always" or (mode == "on_success" and row.state == "success")


def _clean_remote(engine, row: CaseRow, notes: list[str]) -> bool:
    if not row.remote_path and (row.slot_host or row.host):
        return _discard_upload(engine, row, notes)
    if not cleanup_wanted(engine.config.finish.remote_cleanup, row):
        return True
    try:
        engine.host_of(row).transport.remove_tree(row.remote_path)
    except (TransientError, HostError) as exc:
        retry_at = engine.clock() + engine.config.retry.max_seconds
        log.warning("case %s: the remote folder %s could not be removed yet: %s", row.id,
                    row.remote_path, exc)
        engine.store.wrapup_progress(row.id, row.state, retry_at=retry_at,
                                     note=f"removing the remote folder: {exc}")
        return False
    except PermanentError as exc:
        notes.append(f"remote folder not removed: {exc}")
        log.warning("case %s: the remote folder %s was not removed: %s", row.id,
                    row.remote_path, exc)
        return True
    log.info("case %s: removed the remote folder %s", row.id, row.remote_path)
    return True


def _discard_upload(engine, row: CaseRow, notes: list[str]) -> bool:
    """The case ended before its upload was complete: what an interrupted attempt left for a
    later one to resume is not needed now (a retry of the case uploads again)."""
    try:
        transport = engine.host_of(row).transport
        transport.discard_upload(transport.path(remote_name(row)))
    except (TransientError, HostError) as exc:
        engine.store.wrapup_progress(row.id, row.state,
                                     retry_at=engine.clock() + engine.config.retry.max_seconds,
                                     note=f"removing the unfinished upload: {exc}")
        return False
    except PermanentError as exc:
        notes.append(f"unfinished upload not removed: {exc}")
    return True


def _archive(engine, row: CaseRow, notes: list[str]) -> CaseRow:
    finish = engine.config.finish
    dest = finish.archive_done if row.state == "success" else finish.archive_failed
    if dest is None:
        return row
    src = Path(row.local_path)
    if src.parent == dest:
        return row  # already there (a repeated wrap-up)
    if not src.is_dir() or src.is_symlink():
        notes.append(f"case folder not archived: {src} is no longer there")
        return row
    try:
        dest.mkdir(parents=True, exist_ok=True)  # made by `caseflow run`; again if it went
        target = free_name(dest, row.name, row.id)
        os.rename(src, target)
    except (OSError, PermanentError) as exc:
        notes.append(f"case folder not archived: {exc}")
        log.warning("case %s: could not move %s to %s: %s", row.id, src, dest, exc)
        return row
    engine.store.wrapup_progress(row.id, row.state, local_path=str(target))
    engine.forget_folder(str(src), row.inode)
    log.info("case %s %r: case folder moved to %s", row.id, row.name, target)
    return engine.store.get(row.id) or row


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


def _run_hook(engine, row: CaseRow, notes: list[str]) -> None:
    finish = engine.config.finish
    if not finish.on_finish:
        return
    argv = list(finish.on_finish) if isinstance(finish.on_finish, tuple) else \
        ["sh", "-c", finish.on_finish]
    env = {**os.environ, **hook_env(row)}
    try:
        proc = subprocess.Popen(argv, env=env, cwd=engine.config.path.parent,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        notes.append(f"on_finish hook could not start: {exc.strerror or exc}")
        log.error("case %s: on_finish hook could not start: %s", row.id, exc)
        return
    try:
        out, _ = proc.communicate(timeout=finish.on_finish_timeout_seconds)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        notes.append(f"on_finish hook killed after {finish.on_finish_timeout_seconds:.0f} s")
        log.error("case %s: on_finish hook did not finish within %.0f s; killed", row.id,
                  finish.on_finish_timeout_seconds)
        return
    text = out.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        tail = text[-OUTPUT_LIMIT:]
        notes.append(f"on_finish hook exited {proc.returncode}" + (f": {tail}" if tail else ""))
        log.error("case %s: on_finish hook exited %s%s", row.id, proc.returncode,
                  f"\n{tail}" if tail else "")
    else:
        log.info("case %s: on_finish hook done%s", row.id, f": {text[-300:]}" if text else "")
