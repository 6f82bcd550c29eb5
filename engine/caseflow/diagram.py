"""Exports the case machine as a diagram (transitions' diagram support).

`mermaid` needs nothing else; `dot` needs the `graphviz` Python package; `svg`
also needs Graphviz's `dot` program.
"""

from __future__ import annotations

import shutil
from typing import Any, Literal

from transitions.extensions import GraphMachine

from .core.machine import machine_kwargs
from .errors import CaseflowError
from .spec import MachineSpec

FORMATS = ("mermaid", "dot", "svg")
TITLE = "caseflow case"


class _Model:
    pass


def render(spec: MachineSpec, fmt: str) -> str | bytes:
    if fmt not in FORMATS:
        raise ValueError(f"unknown diagram format {fmt!r}; choose one of {', '.join(FORMATS)}")
    engine: Literal["mermaid", "graphviz"] = "mermaid" if fmt == "mermaid" else "graphviz"
    if engine == "graphviz":
        try:
            import graphviz  # noqa: F401
        except ImportError as exc:
            raise CaseflowError("the `graphviz` Python package is needed for dot and svg") from exc
    model = _Model()
    kwargs = machine_kwargs(spec)
    # the diagram shows the moves; the callbacks' names are resolved on a real case only
    for t in kwargs["transitions"]:
        for key in ("before", "after", "prepare"):
            t.pop(key, None)
    for s in kwargs["states"]:
        s.pop("on_enter", None)
        s.pop("on_exit", None)
    machine = GraphMachine(
        model=model, graph_engine=engine, show_conditions=True, title=TITLE, **kwargs
    )
    graph = machine.model_graphs[id(model)]
    graph.reset_styling()  # no state is "current" in an exported diagram
    # the engine's own graph (a graphviz.Digraph, or mermaid's): transitions types it loosely
    drawn: Any = graph.get_graph(title=TITLE)
    if fmt == "mermaid":
        return drawn.draw(None)
    if fmt == "dot":
        return drawn.source
    if shutil.which("dot") is None:
        raise CaseflowError(
            "svg output needs Graphviz's `dot` program (Debian: apt-get install graphviz)"
        )
    return drawn.pipe(format="svg")
