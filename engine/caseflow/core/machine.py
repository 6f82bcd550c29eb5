"""Builds the `transitions.Machine` from the spec.

The machine has no models of its own: each step binds a `Case` to it for the
duration of one trigger (`bound`), so worker threads can drive different cases
at once. Adding and removing models is guarded by a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from transitions import Machine, MachineError

from ..spec import MachineSpec
from ..store import CaseRow

__all__ = ["CaseMachine", "MachineError"]


class Model(Protocol):
    """What the machine binds: a case with its row (caseflow.core.case_model.Case)."""

    @property
    def row(self) -> CaseRow: ...


M = TypeVar("M", bound=Model)


def machine_kwargs(spec: MachineSpec) -> dict:
    states = []
    for s in spec.states:
        d: dict[str, str | list[str]] = {"name": s.name}
        if s.on_enter:
            d["on_enter"] = list(s.on_enter)
        if s.on_exit:
            d["on_exit"] = list(s.on_exit)
        states.append(d)
    return dict(
        states=states,
        transitions=[t.as_transitions_dict() for t in spec.transitions],
        initial=spec.initial,
        auto_transitions=False,
        send_event=True,
        ignore_invalid_triggers=False,
    )


class CaseMachine:
    def __init__(self, spec: MachineSpec):
        self.spec = spec
        self.machine = Machine(model=None, after_state_change="persist", **machine_kwargs(spec))
        self._lock = threading.Lock()
        # what may happen in each state, as the machine says (asked once: it does not change)
        self._triggers = {s: frozenset(self.machine.get_triggers(s)) for s in spec.state_names}

    @contextmanager
    def bound(self, case: M) -> Iterator[M]:
        with self._lock:
            self.machine.add_model(case, initial=case.row.state)
        try:
            yield case
        finally:
            with self._lock:
                self.machine.remove_model(case)

    def allowed(self, trigger: str, state: str) -> bool:
        """Whether the machine has `trigger` in `state` (its conditions aside)."""
        return trigger in self._triggers.get(state, ())

    def states_allowing(self, trigger: str) -> list[str]:
        """The states in which the machine has `trigger`, in spec order."""
        return [s for s in self.spec.state_names if trigger in self._triggers[s]]
