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

from .. import casefolder
from .context import Core

log = logging.getLogger("caseflow.engine")


class Admission:
    """Admits the inbox's new folders for one engine; knows when the inbox is listed next."""

    def __init__(self, core: Core):
        self.core = core
        self.next_rescan = float("-inf")  # monotonic time of the next full inbox listing

    def rescan_soon(self) -> None:
        self.next_rescan = float("-inf")

    def detect(self, now: float) -> list[int]:
        """Turn new inbox folders into `detected` cases; nudge cases whose folder went away."""
        core = self.core
        appeared, gone = core.watcher.drain() if core.watcher else (set(), set())
        inbox, listing = core.config.inbox, None
        mono = core.monotonic()
        if mono >= self.next_rescan:
            self.next_rescan = mono + core.config.rescan_seconds
            try:
                listing = {e.name for e in os.scandir(inbox)}
            except OSError as exc:
                log.error("cannot list the inbox %s: %s", inbox, exc)
        new, gone = core.folders.changes(inbox, appeared, gone, listing)
        for name in gone:
            for row in core.store.cases_at(str(inbox / name), [core.spec.initial]):
                core.store.reschedule(row.id, row.state, now)
        created = []
        for name, inode in new:
            created.append(admit(core, name, inode, now))
            core.folders.admit(name, inode)
        return created


def admit(core: Core, name: str, inode: str, now: float) -> int:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # the store keeps text; refuse it, saying so, and go on
        shown = casefolder.shown_name(name)
        case_id = core.store.create_case(
            shown, str(core.config.inbox / shown), inode, core.spec.initial, now, now
        )
        log.warning("case %s %r: its folder name is not valid UTF-8", case_id, shown)
        core.outcomes.fail(
            case_id,
            f"the folder name {shown!r} is not valid UTF-8 (the bytes after "
            "a backslash are not text); rename the folder to admit it",
        )
        return case_id
    path = core.config.inbox / name
    # what the folder looks like now: its quiet period starts here, on the monotonic clock
    fingerprint, mono = casefolder.newest_change(path), core.monotonic()
    case_id = core.store.create_case(
        name,
        str(path),
        inode,
        core.spec.initial,
        now,
        now + core.config.quiet_seconds,
    )
    activity = core.last_activity(name)
    core.quiet_since[case_id] = (fingerprint, mono if activity is None else activity, mono)
    log.info(
        "case %s %r: detected in the inbox",
        case_id,
        name,
        extra={
            "case_id": case_id,
            "case_name": name,
            "to_state": core.spec.initial,
            "trigger": "detect",
        },
    )
    return case_id
