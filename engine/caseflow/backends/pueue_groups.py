"""The pueue daemon's groups as caseflow keeps them, and what `caseflow check` asks of pueue.

Groups are made with their parallel count (`group add NAME -p N`) and the count of an existing
one is set to the group's slots (`parallel N -g NAME`); 3.x makes groups asynchronously (its
`group add` only asks the daemon's task handler), so caseflow waits until they are listed. A
group pueue paused (it pauses groups with queued tasks when its daemon restarts) is logged once
and shown by `notice()` until it runs again.

`PueueGroups` is a mixin of `PueueBackend` (pueue.py); what it uses of it is declared below.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import HostError, TransientError

log = logging.getLogger("caseflow.pueue")


class PueueGroups:
    """Group keeping, the paused-group notice and the check of a pueue backend."""

    if TYPE_CHECKING:  # what PueueBackend provides
        transport: Any
        groups: dict[str, int]
        pueue: tuple[str, ...]
        manage_groups: bool
        major: int
        paused_groups: set[str]
        _counts: dict[str, int]
        _clock: Callable[[], float]
        _sleep: Callable[[float], None]

        @property
        def client(self) -> str: ...
        def _run(self, *args: str) -> Any: ...
        @staticmethod
        def _error(res: Any) -> str: ...
        def _status(self) -> dict: ...

    def check(self) -> list[tuple[bool, str]]:
        """`caseflow check` on a pueue host: the client runs and the daemon answers. Makes no
        group (caseflow makes them at its first contact when manage_groups is on)."""
        res = self.transport.run([*self.pueue, "--version"])
        match = re.search(r"\d+\.\d+\.\d+", res.stdout)
        if res.returncode != 0 or not match:
            why = (
                "not found"
                if res.returncode == 127 or "not found" in res.stderr
                else f"`--version` failed (exit {res.returncode}): {self._error(res)}"
            )
            return [(False, f"pueue client {self.client}: {why}")]
        lines = [(True, f"pueue client {self.client}: pueue {match.group(0)}")]
        try:
            data = self._status()
        except (HostError, TransientError) as exc:  # DaemonNotRunning, BadOutput, ...
            return [*lines, (False, str(exc))]
        have = data.get("groups", {})
        missing = [g for g in self.groups if g not in have]
        lines.append(
            (
                True,
                f"pueue daemon answers: {len(data['tasks'])} task(s), groups "
                f"{', '.join(sorted(have)) or 'none'}",
            )
        )
        if missing:
            lines.append(
                (
                    self.manage_groups,
                    f"pueue groups {', '.join(missing)} missing: "
                    + (
                        "made at caseflow's first contact"
                        if self.manage_groups
                        else "backend.manage_groups is off, so make them "
                        "(`pueue group add NAME -p N`)"
                    ),
                )
            )
        return lines

    def _groups(self) -> dict:
        res = self._run("group", "--json")
        try:
            groups = json.loads(res.stdout) if res.returncode == 0 else None
        except ValueError:
            groups = None
        if not isinstance(groups, dict):  # before 3.2.0: no `group --json`
            groups = self._status().get("groups", {})
        return groups

    def _manage_groups(self, existing: dict) -> None:
        """Create the missing groups with their parallel count, set the count of the others."""
        added = []
        for name, slots in self.groups.items():
            current = existing.get(name)
            if not isinstance(current, dict):
                res = self._run("group", "add", name, "-p", str(slots))
                if res.returncode != 0 and "already exists" not in res.stdout + res.stderr:
                    raise TransientError(f"`pueue group add {name}` failed: {self._error(res)}")
                log.info(
                    "created pueue group %s on %s (parallel tasks %s)",
                    name,
                    self.transport.name,
                    slots,
                )
                added.append(name)
            elif current.get("parallel_tasks") != slots:
                res = self._run("parallel", str(slots), "-g", name)
                if res.returncode != 0:
                    raise TransientError(
                        f"`pueue parallel {slots} -g {name}` failed: {self._error(res)}"
                    )
                log.info(
                    "pueue group %s on %s: parallel tasks %s -> %s",
                    name,
                    self.transport.name,
                    current.get("parallel_tasks"),
                    slots,
                )
        if added and self.major < 4:  # 3.x: `group add` only asks the daemon's task handler
            deadline = self._clock() + 30
            while not all(n in self._groups() for n in added):
                if self._clock() > deadline:
                    raise TransientError(
                        f"pueue did not create the group(s) {added} on "
                        f"{self.transport.name} within 30 s"
                    )
                self._sleep(0.05)

    def _note(self, groups: dict, counts: dict) -> None:
        paused = {
            name
            for name, g in groups.items()
            if isinstance(g, dict) and g.get("status") == "Paused" and name in self.groups
        }
        for name in sorted(paused - self.paused_groups):
            log.warning(
                "pueue group %s on %s is PAUSED; its queued tasks wait until someone "
                "runs `pueue start -g %s` (pueue pauses groups after its daemon restarts)",
                name,
                self.transport.name,
                name,
            )
        for name in sorted(self.paused_groups - paused):
            log.info("pueue group %s on %s runs again", name, self.transport.name)
        self.paused_groups, self._counts = paused, counts

    def notice(self) -> str | None:
        parts = []
        if self.paused_groups:
            parts.append(
                f"pueue group(s) {', '.join(sorted(self.paused_groups))} PAUSED: queued "
                "tasks wait until `pueue start -g NAME` (pueue pauses groups with "
                "queued tasks when its daemon restarts)"
            )
        c = self._counts
        if c.get("stashed"):
            parts.append(
                f"{c['stashed']} task(s) STASHED in pueue: they wait for `pueue enqueue ID`"
            )
        if c.get("paused"):
            parts.append(f"{c['paused']} task(s) PAUSED in pueue: they wait for `pueue start ID`")
        if c.get("lost"):
            parts.append(
                f"{c['lost']} job(s) that pueue lost track of: their slots stay held "
                "until their processes end"
            )
        return "; ".join(parts) or None
