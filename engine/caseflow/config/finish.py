"""What the configuration says about a case's end: where its results come home (`results:`),
where its folder is archived (`archive:`), the remote clean-up and the hooks run here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..settings import one_of, positive, setting
from .reader import Reader, can_make, existing_ancestor, resolve, show

CLEANUP_MODES = ("never", "on_success", "always")


@dataclass(frozen=True)
class ResultsConfig:
    """What comes home when a job ends, and where it goes."""

    folder: Path | None  # None: results are not fetched (the job log is)
    patterns: tuple[str, ...] | None = None  # None: every file the job created or changed


@dataclass(frozen=True)
class FinishConfig:
    """What happens after a case reached its terminal state."""

    archive_done: Path | None = None  # success goes here
    archive_failed: Path | None = None  # failure and not_found go here
    remote_cleanup: str = setting(
        "never",
        one_of(CLEANUP_MODES),
        "when the case folder on the host is removed, once its results are home",
    )
    on_finish: tuple[str, ...] | str | None = None
    on_finish_timeout_seconds: float = setting(
        300.0, positive, "a hook running longer is killed (and noted)"
    )
    # run when work on a host pauses (e.g. `needs login`); same form and timeout as on_finish
    on_host_paused: tuple[str, ...] | str | None = None


def _outside_inbox(reader: Reader, key: str, folder: Path, inbox: Path) -> None:
    if folder == inbox or inbox in folder.parents:
        raise reader.error(
            key,
            f"{folder} is inside the inbox, where it would be taken for a "
            "case; choose a folder next to the inbox",
        )


def _folder(reader: Reader, key: str, base: Path, default: str | None = None) -> Path | None:
    """A local folder setting: it exists, or `caseflow run` can make it."""
    value = reader.get(key, str, default)
    if value is None:
        return None
    folder = resolve(base, value)
    can_make(reader, key, folder)
    return folder


def read_results(top: Reader, base: Path, inbox: Path) -> ResultsConfig:
    rs = top.sub("results")
    fetch = rs.get("fetch", bool, True)
    # default: a "results" folder next to the inbox
    folder = (
        _folder(rs, "folder", base if "folder" in rs.data else inbox.parent, "results")
        if fetch
        else None
    )
    if folder is not None:
        _outside_inbox(rs, "folder", folder, inbox)
    patterns = rs.get("patterns", list, None, what='a list of patterns such as "out/*"')
    if patterns is not None:
        for p in patterns:
            if not isinstance(p, str) or not p.strip() or p.startswith("/") or ".." in p.split("/"):
                raise rs.error("patterns", f"not a pattern inside the case folder: {show(p)}")
        patterns = tuple(patterns)
    rs.finish()
    return ResultsConfig(folder=folder, patterns=patterns)


def read_finish(top: Reader, base: Path, inbox: Path) -> FinishConfig:
    ar = top.sub("archive")
    done = _folder(ar, "done", base)
    failed = _folder(ar, "failed", base)
    ar.finish()
    inbox_dev = os.stat(inbox).st_dev
    for key, folder in (("done", done), ("failed", failed)):
        if folder is None:
            continue
        _outside_inbox(ar, key, folder, inbox)
        # a folder still to be made will be on the file system of its nearest ancestor
        if os.stat(existing_ancestor(folder)).st_dev != inbox_dev:
            raise ar.error(
                key,
                f"{folder} is on another file system than the inbox; "
                "archiving moves folders by renaming, so it must be on the same",
            )
    cleanup = top.setting(FinishConfig, "remote_cleanup")
    hook = _hook(top, "on_finish")
    timeout = top.setting(FinishConfig, "on_finish_timeout_seconds")
    return FinishConfig(
        archive_done=done,
        archive_failed=failed,
        remote_cleanup=cleanup,
        on_finish=hook,
        on_finish_timeout_seconds=timeout,
        on_host_paused=_hook(top, "on_host_paused"),
    )


def _hook(top: Reader, key: str) -> tuple[str, ...] | str | None:
    """A command caseflow runs on this machine: a shell string or an argument list."""
    hook = top.get(key, (str, list), None, what="a shell command string or an argument list")
    if isinstance(hook, list):
        if not hook or not all(isinstance(c, str) for c in hook):
            raise top.error(key, "an argument list must be a non-empty list of strings")
        hook = tuple(hook)
    elif isinstance(hook, str) and not hook.strip():
        raise top.error(key, "must not be empty (remove the key to run no hook)")
    return hook
