"""The case machine as an SVG drawing, from the spec (specs/case_machine.yaml), with a place
for the number of cases in each state that the page's script updates.

Laid out here rather than by Graphviz, so that the page needs no program besides caseflow:
states in columns by their longest distance from the initial state along forward moves
(a move back, such as retry or requeue, is one that returns to a state on the way there),
states of one column stacked in the spec's order. Moves back are drawn below the states.
Every piece of text is escaped; the ids (`state-<name>`, `count-<name>`) come from the spec.
"""

from __future__ import annotations

from html import escape

from ..spec import MachineSpec

W, H = 124, 58  # a state's box
GAP_X, GAP_Y = 52, 40  # between columns, between rows
MARGIN = 16
FAN_IN = 3  # edges with the same label into one state from this many: one label


def _edges(spec: MachineSpec) -> dict[tuple[str, str], list[str]]:
    """(source, dest) -> triggers, in the spec's order."""
    edges: dict[tuple[str, str], list[str]] = {}
    for t in spec.transitions:
        for src in t.sources:
            triggers = edges.setdefault((src, t.dest), [])
            if t.trigger not in triggers:
                triggers.append(t.trigger)
    return edges


def _back_edges(spec: MachineSpec, edges) -> set[tuple[str, str]]:
    out_of: dict[str, list[str]] = {}
    for src, dst in edges:
        out_of.setdefault(src, []).append(dst)
    back, on_path, done = set(), [], set()

    def visit(node):
        on_path.append(node)
        for nxt in out_of.get(node, []):
            if nxt in on_path:
                back.add((node, nxt))
            elif nxt not in done:
                visit(nxt)
        on_path.pop()
        done.add(node)

    visit(spec.initial)
    for s in spec.state_names:  # states the initial one cannot reach
        if s not in done:
            visit(s)
    return back


def layout(spec: MachineSpec) -> dict[str, tuple[int, int]]:
    """state -> (column, row)."""
    edges = _edges(spec)
    back = _back_edges(spec, edges)
    rank = {s: 0 for s in spec.state_names}
    for _ in spec.state_names:  # longest path over forward edges (a DAG): n relaxations
        for src, dst in edges:
            if (src, dst) not in back and rank[dst] < rank[src] + 1:
                rank[dst] = rank[src] + 1
    rows: dict[int, int] = {}
    place = {}
    for s in spec.state_names:
        place[s] = (rank[s], rows.get(rank[s], 0))
        rows[rank[s]] = rows.get(rank[s], 0) + 1
    return place


def _xy(col: int, row: int) -> tuple[int, int]:
    return MARGIN + col * (W + GAP_X), MARGIN + 22 + row * (H + GAP_Y)


def render(spec: MachineSpec, counts: dict[str, int] | None = None) -> str:
    counts = counts or {}
    place = layout(spec)
    edges = _edges(spec)
    back = _back_edges(spec, edges)
    cols = max(c for c, _ in place.values()) + 1
    rows = max(r for _, r in place.values()) + 1
    bottom = _xy(0, rows - 1)[1] + H
    width = MARGIN * 2 + cols * W + (cols - 1) * GAP_X
    height = bottom + 24 + 18 * sum(1 for e in edges if e in back) + MARGIN
    fan: dict[tuple[str, str], int] = {}
    for (_src, dst), triggers in edges.items():
        key = (" | ".join(triggers), dst)
        fan[key] = fan.get(key, 0) + 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="machine" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'aria-labelledby="machine-title machine-desc">',
        '<title id="machine-title">The case state machine</title>',
        '<desc id="machine-desc">Each box is a state with the number of cases in it; '
        "arrows are the moves the spec allows, labelled with their triggers. The same "
        "numbers are on the line above the list of what needs attention.</desc>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="arrowhead"/></marker></defs>',
    ]
    fan_labels: dict[tuple[str, str], tuple[float, float]] = {}
    x1: float
    y1: float
    x2: float
    y2: float
    below = bottom + 24
    for (src, dst), triggers in edges.items():
        label = " | ".join(triggers)
        (sc, sr), (dc, dr) = place[src], place[dst]
        sx, sy = _xy(sc, sr)
        dx, dy = _xy(dc, dr)
        cls = "edge"
        if (src, dst) in back:  # under everything, from the bottom of one to the other's
            x1, y1, x2, y2 = sx + W / 2 + 8, sy + H, dx + W / 2 - 8, dy + H
            path = f"M{x1},{y1} C{x1},{below} {x2},{below} {x2},{y2}"
            lx, ly = (x1 + x2) / 2, (y1 + 6 * below + y2) / 8 - 4  # the curve's middle
            below += 18
            cls += " back"
        elif sr == dr and dc == sc + 1:
            x1, y1, x2, y2 = sx + W, sy + H / 2, dx, dy + H / 2
            path = f"M{x1},{y1} L{x2},{y2}"
            lx, ly = (x1 + x2) / 2, y1 - 6
        else:
            x1, y1, x2, y2 = sx + W / 2, sy + H, dx, dy + H / 2
            path = f"M{x1},{y1} C{x1},{y2} {x2 - GAP_X},{y2} {x2},{y2}"
            lx, ly = (4 * x1 + 4 * x2 - 3 * GAP_X) / 8, (y1 + 7 * y2) / 8 - 6
        many = fan[(label, dst)] >= FAN_IN
        if many:
            cls += " fan"
            fan_labels[(label, dst)] = (dx - 6, dy + H / 2 - 8)
        parts.append(
            f'<path class="{cls}" d="{path}" marker-end="url(#arrow)">'
            f"<title>{escape(src)} → {escape(dst)}: {escape(label)}</title></path>"
        )
        if not many:
            parts.append(
                f'<text class="edge-label" x="{lx:.0f}" y="{ly:.0f}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    for (label, _dst), (x, y) in fan_labels.items():
        parts.append(
            f'<text class="edge-label" x="{x:.0f}" y="{y:.0f}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
    for s in spec.states:
        x, y = _xy(*place[s.name])
        n = counts.get(s.name, 0)
        kind = "terminal" if s.terminal else "holds-slot" if s.holds_slot else "waiting"
        name = escape(s.name)
        parts.append(
            f'<g class="state {kind}{" busy" if n else ""}" id="state-{name}" '
            f'data-state="{name}"><title>{name}: {escape(s.description)}</title>'
            f'<rect x="{x}" y="{y}" width="{W}" height="{H}" rx="8"/>'
            f'<text class="state-name" x="{x + W / 2:.0f}" y="{y + 20}" '
            f'text-anchor="middle">{name}</text>'
            f'<text class="count" id="count-{name}" x="{x + W / 2:.0f}" y="{y + 46}" '
            f'text-anchor="middle">{n}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
