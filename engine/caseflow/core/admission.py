"""Admission: folders that appear in the inbox become `detected` cases.

The watcher's events, and a full listing every `rescan_seconds` (events can be lost), go
through `watcher.InboxFolders`, which knows the folders by presence, not by inode (ext4 reuses
inode numbers: a folder copied in again after its case left is a new case, issue 13). A case
whose folder went away while it waited to be stable is looked at again at once. A folder name
that is not UTF-8 becomes a case that fails saying so; the others are admitted.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from . import casefolder

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("caseflow.engine")


def detect(engine: Engine, now: float) -> list[int]:
    """Turn new inbox folders into `detected` cases; nudge cases whose folder went away."""
    appeared, gone = engine.watcher.drain() if engine.watcher else (set(), set())
    inbox, listing = engine.config.inbox, None
    mono = engine.monotonic()
    if mono >= engine.next_rescan:
        engine.next_rescan = mono + engine.config.rescan_seconds
        try:
            listing = {e.name for e in os.scandir(inbox)}
        except OSError as exc:
            log.error("cannot list the inbox %s: %s", inbox, exc)
    new, gone = engine.folders.changes(inbox, appeared, gone, listing)
    for name in gone:
        for row in engine.store.cases_at(str(inbox / name), [engine.spec.initial]):
            engine.store.reschedule(row.id, row.state, now)
    created = []
    for name, inode in new:
        created.append(admit(engine, name, inode, now))
        engine.folders.admit(name, inode)
    return created


def admit(engine: Engine, name: str, inode: str, now: float) -> int:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # the store keeps text; refuse it, saying so, and go on
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        case_id = engine.store.create_case(
            shown, str(engine.config.inbox / shown), inode, engine.spec.initial, now, now
        )
        log.warning("case %s %r: its folder name is not valid UTF-8", case_id, shown)
        engine.fail(
            case_id,
            f"the folder name {shown!r} is not valid UTF-8 (the bytes after "
            "a backslash are not text); rename the folder to admit it",
        )
        return case_id
    path = engine.config.inbox / name
    # what the folder looks like now: its quiet period starts here, on the monotonic clock
    fingerprint, mono = casefolder.newest_change(path), engine.monotonic()
    case_id = engine.store.create_case(
        name,
        str(path),
        inode,
        engine.spec.initial,
        now,
        now + engine.config.quiet_seconds,
    )
    activity = engine.last_activity(name)
    engine.quiet_since[case_id] = (fingerprint, mono if activity is None else activity, mono)
    log.info(
        "case %s %r: detected in the inbox",
        case_id,
        name,
        extra={
            "case_id": case_id,
            "case_name": name,
            "to_state": engine.spec.initial,
            "trigger": "detect",
        },
    )
    return case_id
