"""`caseflow status --watch`: the status table redrawn in place every second, the number of
cases in each state on top, until Ctrl-C.

Each frame goes to the top left of the screen and overwrites the previous one line by
line (erasing each line's rest, then everything below), so nothing flickers; it holds
as many cases as the terminal has room for, the active ones first.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping

from ..spec import MachineSpec
from ..store.reader import StatusReader
from ..text import plural
from ..views import host_lines, host_waits, iso, status_table  # as `caseflow status` says it

HOME, CLEAR_LINE, CLEAR_BELOW, CLEAR_SCREEN = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"


def frame(
    reader: StatusReader,
    spec: MachineSpec,
    state: str | None,
    rows: int,
    columns: int,
    now: float,
    groups: Mapping[str, Iterable[str]] | None = None,
) -> list[str]:
    """The lines of one screen (`groups`: group -> its hosts, as views.host_waits takes)."""
    counts: Counter = Counter()
    for c in reader.counts():
        counts[c.state] += c.cases
    total = sum(counts.values())
    lines = [
        f"caseflow status at {iso(now)}: {plural(total, 'case')}"
        + (f" (showing {state})" if state else "")
        + "; Ctrl-C to stop",
        *count_lines(spec, counts, columns),
    ]
    hosts = reader.hosts()
    if groups is not None:  # the configured hosts' only (a removed one's problem is stale)
        known = {name for names in groups.values() for name in names}
        hosts = [h for h in hosts if h.name in known]
    lines += host_lines(hosts)
    lines.append("")
    room = max(1, rows - len(lines) - 2)  # the table's header and a last line
    shown, cases = reader.page(
        [state] if state else None, limit=room, active_first=spec.terminal_states
    )
    if not cases:
        lines.append("no cases")
    else:
        lines += status_table(
            cases, now, reader.histories(c.id for c in cases), host_waits(hosts, groups)
        ).splitlines()
        if shown > len(cases):
            lines.append(f"... and {shown - len(cases)} more (the active ones are shown first)")
    return [line[:columns] for line in lines[:rows]]


def count_lines(spec: MachineSpec, counts: Counter, columns: int) -> list[str]:
    """The cases per state, wrapped to `columns`: the states with cases, and the terminal
    states always (a failure must not be cut off the edge of an 80-column terminal)."""
    words = [
        f"{name} {counts.get(name, 0)}"
        for name in spec.state_names
        if counts.get(name, 0) or name in spec.terminal_states
    ]
    lines = [""]
    for word in words:
        if lines[-1] and len(lines[-1]) + 2 + len(word) > columns:
            lines.append("")
        lines[-1] += ("  " if lines[-1] else "") + word
    return lines


def watch(
    store,
    spec: MachineSpec,
    state: str | None = None,
    interval: float = 1.0,
    out=None,
    clock=time.time,
    groups: Mapping[str, Iterable[str]] | None = None,
) -> int:
    out = out or sys.stdout
    reader = StatusReader(store.path)
    out.write(CLEAR_SCREEN)
    try:
        while True:
            size = shutil.get_terminal_size()
            lines = frame(reader, spec, state, size.lines, size.columns, clock(), groups)
            out.write(
                HOME
                + "".join(line + CLEAR_LINE + "\n" for line in lines[:-1])
                + lines[-1]
                + CLEAR_LINE
                + CLEAR_BELOW
            )
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
        return 0
    finally:
        reader.close()
