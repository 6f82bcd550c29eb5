"""Adapters found by name: caseflow's own and those that other packages register.

A transport or queue backend registers under a name in the entry point group
`caseflow.transports` or `caseflow.backends` of its distribution's metadata (caseflow's
own in caseflow's pyproject.toml, a third party's in its own: no file of caseflow changes);
`kind:` in a host's `transport:` or `backend:` names it. The object an entry point names is
a `transports.TransportAdapter` or a `backends.BackendAdapter`: its settings, how they are
read, how the adapter is made, the remote tools it needs. Entry points are only read here,
and an adapter's module is imported only when a configuration names it.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Any

TRANSPORTS = "caseflow.transports"
BACKENDS = "caseflow.backends"

# caseflow's own adapters as its pyproject.toml registers them (tests/test_plugins.py checks
# that the two agree). Used when caseflow's installed metadata does not name them: a source
# checkout imported without installation, or an editable install made before the entry points
# existed (the metadata is written at install time; `pip install -e .` again refreshes it).
OWN = {
    TRANSPORTS: {
        "local": "caseflow.transports.local:ADAPTER",
        "ssh": "caseflow.transports.ssh:ADAPTER",
        "openssh": "caseflow.transports.openssh:ADAPTER",
    },
    BACKENDS: {
        "direct": "caseflow.backends.direct:ADAPTER",
        "pueue": "caseflow.backends.pueue:ADAPTER",
        "slurm": "caseflow.backends.slurm:ADAPTER",
        "gridengine": "caseflow.backends.gridengine:ADAPTER",
    },
}


class PluginError(Exception):
    """An adapter that is registered but cannot be used; the message says why and what to
    do (the config reader puts it after the file and key that named the adapter)."""


@dataclass(frozen=True)
class Registration:
    name: str
    value: str  # "module:attribute"
    source: str  # the distribution that registers it, for messages
    conflict: str | None = None  # other packages register the same name (what each says)

    def load(self) -> Any:
        module, _, attribute = self.value.partition(":")
        try:
            obj: Any = import_module(module)
            for part in attribute.split(".") if attribute else ():
                obj = getattr(obj, part)
        except Exception as exc:  # a third party's import error is theirs to read
            raise PluginError(
                f"{self.name!r} (registered by {self.source} as {self.value}) "
                f"cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        return obj


def registered(group: str) -> dict[str, Registration]:
    """Every adapter registered in `group`, by name, in name order. Read once per process and
    search path (reading every installed distribution's metadata took 24 ms here, a config
    load asks five times): a package installed while caseflow runs is found after a restart."""
    return _registered(group, tuple(sys.path))


@functools.lru_cache(maxsize=8)
def _registered(group: str, path: tuple[str, ...]) -> dict[str, Registration]:
    found: dict[str, list[Registration]] = {}
    own_declared = False
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        source = f"{dist.name} {dist.version}" if dist is not None else "an unnamed package"
        own_declared |= dist is not None and dist.name == "caseflow"
        found.setdefault(ep.name, []).append(Registration(ep.name, ep.value, source))
    if not own_declared:
        for name, value in OWN[group].items():
            found.setdefault(name, []).append(Registration(name, value, "caseflow"))
    out = {}
    for name in sorted(found):
        regs = found[name]
        values = {r.value for r in regs}
        if len(values) > 1:  # two packages claim one name: say so rather than pick one
            claims = "; ".join(f"{r.source} as {r.value}" for r in regs)
            out[name] = Registration(name, regs[0].value, regs[0].source, conflict=claims)
        else:
            out[name] = regs[0]
    return out


def load(group: str, name: str, kind: type) -> Any:
    """The adapter registered as `name` in `group`, an instance of `kind`. Raises KeyError
    when no package registers it, PluginError when it cannot be used."""
    reg = registered(group)[name]
    if reg.conflict is not None:
        raise PluginError(
            f"{name!r} is registered by more than one package ({reg.conflict}); "
            "uninstall all but one of them"
        )
    obj = reg.load()
    if not isinstance(obj, kind):
        raise PluginError(
            f"{name!r} (registered by {reg.source} as {reg.value}) is not a "
            f"caseflow {kind.__name__} but {type(obj).__name__}"
        )
    return obj
