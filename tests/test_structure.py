"""The shape of the package, kept so: no import cycles, no module reaching into another's
private names, and the status displays reading the spec's flags instead of naming states.

Cheap checks on the source (Python's `ast`), no import of caseflow needed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ENGINE = Path(__file__).resolve().parent.parent / "engine"
PACKAGE = ENGINE / "caseflow"
SPEC = yaml.safe_load((ENGINE.parent / "specs" / "case_machine.yaml").read_text())

# Private names of other libraries that caseflow uses on purpose, each for a reason written
# where it is used; (module, the expression as ast.unparse writes it).
FOREIGN_PRIVATES = {
    # a forked child must not run the parent's atexit handlers nor flush its buffers
    ("caseflow.daemon", "os._exit"),
    # paramiko: the keep-alive without a reply (a "global request" would wait for one)
    ("caseflow.transports.ssh_channels", "transport._send_user_message"),
    # paramiko: the ciphers it offers, in caseflow's order of preference (measured)
    ("caseflow.transports.ssh_connection", "_PARAMIKO.Transport._preferred_ciphers"),
    # paramiko: the packetizer's fast path for AES-GCM/CTR (caseflow.transports.ssh_packets)
    ("caseflow.transports.ssh_packets", "packetizer._inc_iv_counter"),
    ("caseflow.transports.ssh_packets", "packetizer._trigger_rekey"),
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ENGINE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def imported(name: str, node: ast.Import | ast.ImportFrom) -> list[tuple[str, str | None]]:
    """(module, the name taken from it or None) for each name an import statement takes."""
    if isinstance(node, ast.Import):
        return [(a.name, None) for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append((sub, None) if sub in MODULES else (base, a.name))
    return out


def import_graph() -> dict[str, set[str]]:
    """Every import, at the top, in a function or under TYPE_CHECKING: a cycle through any of
    them is a knot a reader has to untie."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for mod, _ in imported(name, node):
                    if mod in MODULES and mod != name:
                        graph[name].add(mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_of_caseflow_has_no_cycle():
    assert cycles(import_graph()) == []


def test_cycles_are_found():
    """The control: the check sees a cycle where there is one."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def own_names(tree: ast.AST) -> set[str]:
    """The private names a module defines: functions, classes, attributes it assigns."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def private_reaches(name: str, tree: ast.AST) -> list[str]:
    mine = own_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for mod, taken in imported(name, node):
                if taken and taken.startswith("_") and not taken.startswith("__"):
                    found.append(f"from {mod} import {taken}")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__") or attr in mine:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue  # a mixin's use of its own object's names
            text = ast.unparse(node)
            if (name, text) not in FOREIGN_PRIVATES:
                found.append(text)
    return found


def test_no_module_reaches_into_another_modules_private_names():
    found = {n: r for n, t in TREES.items() if (r := private_reaches(n, t))}
    assert found == {}, "private names used from another module: make them public, or move them"


def test_private_reaches_are_found():
    """The control: both kinds of reach are seen."""
    tree = ast.parse("from .store import _CASE_SELECT\nx = store._conn()\n")
    assert private_reaches("caseflow.views", tree) == [
        "from caseflow.store import _CASE_SELECT",
        "store._conn",
    ]


# -- the displays follow the spec -----------------------------------------------------------
STATES = {s["name"] for s in SPEC["states"]}
DISPLAYS = ["views.py", "cli/status_watch.py", "metrics.py", "web/pages.py", "web/app.py"]


def test_the_status_displays_name_no_state():
    """The status page, `status --watch`, the table and the metrics read the spec's flags
    (terminal, holds_slot, job_may_run, the slot-taking states): a state added or renamed
    in the spec shows up right without touching them."""
    named = []
    for rel in DISPLAYS:
        for node in ast.walk(ast.parse((PACKAGE / rel).read_text())):
            if isinstance(node, ast.Constant) and node.value in STATES:
                named.append(f"{rel}:{node.lineno}: {node.value!r}")
    js = (PACKAGE / "web" / "static" / "app.js").read_text()
    for n, line in enumerate(js.splitlines(), 1):
        for state in STATES:
            if re.search(rf"""["']{state}["']""", line):
                named.append(f"web/static/app.js:{n}: {state!r}")
    assert named == []
