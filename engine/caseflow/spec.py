"""Loads the case machine definition (specs/case_machine.yaml) and checks it.

The spec is the only place that says which moves are legal; everything the
engine knows about states and triggers comes from the `MachineSpec` built here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import shipped
from .errors import SpecError

SPEC_NAME = "case_machine.yaml"
POLL = "poll"  # the special step of a state whose cases are polled in batches
_CALLBACK_KEYS = ("conditions", "unless", "before", "after", "prepare")
_TRANSITION_KEYS = {"trigger", "source", "dest", "description", "role", "why", *_CALLBACK_KEYS}
# the design's triggers; any other needs a `why:` saying what it adds
_CORE_TRIGGERS = (
    "stabilize",
    "enqueue",
    "lock_gpu",
    "requeue",
    "upload",
    "submit",
    "complete",
    "fail",
    "lose",
    "retry",
    "cancel",
)
# what the engine uses a trigger for (`role:` of a transition): it asks the spec by role and
# never names a trigger. The roles of ONE_TRIGGER are each one trigger's, and required.
FAIL, REQUEST, REQUEUE = "fail", "request", "requeue"
JOB_END_ROLES = {
    "success": "job_success",
    "failure": "job_failure",
    "not_found": "job_lost",
    "lost": "job_rerun",  # taken away by the infrastructure: the case runs again
}
ONE_TRIGGER = (FAIL, REQUEUE, *JOB_END_ROLES.values())
REQUIRED_ROLES = (FAIL, *JOB_END_ROLES.values())
ROLES = (*ONE_TRIGGER, REQUEST)
_STATE_KEYS = {
    "name",
    "description",
    "step",
    "worker",
    "terminal",
    "holds_slot",
    "job_may_run",
    "on_enter",
    "on_exit",
    "why",
}
_CORE_STATES = (
    "detected",
    "stable",
    "queued",
    "gpu_locked",
    "uploaded",
    "running",
    "success",
    "failure",
    "not_found",
)


def default_spec_path() -> Path:
    """Where the spec is: $CASEFLOW_SPEC, the source checkout, or the installed data file."""
    env = os.environ.get("CASEFLOW_SPEC")
    if env:
        return Path(env)
    candidates = [root / "specs" / SPEC_NAME for root in shipped.roots()]
    for path in candidates:
        if path.is_file():
            return path
    raise SpecError("cannot find the machine spec; looked in: " + ", ".join(map(str, candidates)))


@dataclass(frozen=True)
class StateSpec:
    name: str
    description: str = ""
    step: str | None = None
    worker: bool = False
    terminal: bool = False
    holds_slot: bool = False
    job_may_run: bool = False
    on_enter: tuple[str, ...] = ()
    on_exit: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransitionSpec:
    trigger: str
    sources: tuple[str, ...]
    dest: str
    description: str = ""
    callbacks: dict = field(default_factory=dict)
    roles: tuple[str, ...] = ()

    def as_transitions_dict(self) -> dict:
        d = {"trigger": self.trigger, "source": list(self.sources), "dest": self.dest}
        d.update({k: list(v) for k, v in self.callbacks.items()})
        return d


@dataclass(frozen=True)
class MachineSpec:
    path: Path
    initial: str
    states: tuple[StateSpec, ...]
    transitions: tuple[TransitionSpec, ...]

    @property
    def state_names(self) -> list[str]:
        return [s.name for s in self.states]

    @property
    def terminal_states(self) -> list[str]:
        return [s.name for s in self.states if s.terminal]

    @property
    def active_states(self) -> list[str]:
        return [s.name for s in self.states if not s.terminal]

    @property
    def slot_states(self) -> list[str]:
        return [s.name for s in self.states if s.holds_slot]

    @property
    def poll_states(self) -> list[str]:
        """States whose cases are polled (their job runs)."""
        return [s.name for s in self.states if s.step == POLL]

    @property
    def job_states(self) -> list[str]:
        """States in which a job of the case may exist on its host (its submit may have been
        sent): a forced end (cancel, giving up) first stops that job."""
        return [s.name for s in self.states if s.job_may_run]

    @property
    def slot_taking_states(self) -> list[str]:
        """States whose step takes a slot (it leads into a state that holds one): their cases
        can move only when a slot of their group is free."""
        holding = set(self.slot_states)
        return [
            s.name
            for s in self.states
            if s.step
            and s.step != POLL
            and s.name not in holding
            and self.dest_of(s.step, s.name) in holding
        ]

    @property
    def triggers(self) -> list[str]:
        seen = []
        for t in self.transitions:
            if t.trigger not in seen:
                seen.append(t.trigger)
        return seen

    def state(self, name: str) -> StateSpec:
        for s in self.states:
            if s.name == name:
                return s
        raise KeyError(name)

    def triggers_for(self, role: str) -> list[str]:
        """The triggers that play `role` (see ROLES), in spec order."""
        out = []
        for t in self.transitions:
            if role in t.roles and t.trigger not in out:
                out.append(t.trigger)
        return out

    def trigger_for(self, role: str) -> str | None:
        """The one trigger that plays `role`, or None when the spec gives it to none."""
        found = self.triggers_for(role)
        return found[0] if found else None

    def required_trigger(self, role: str) -> str:
        """The trigger of a role every spec gives one (REQUIRED_ROLES, checked at load)."""
        trigger = self.trigger_for(role)
        assert trigger is not None, role
        return trigger

    def job_end_trigger(self, outcome: str) -> str:
        """The trigger that ends a polled case whose job ended with `outcome` (a backend's
        SUCCESS, FAILURE, NOT_FOUND or LOST)."""
        return self.required_trigger(JOB_END_ROLES[outcome])

    @property
    def succeeded_states(self) -> list[str]:
        """Where a case whose job succeeded ends (what `on_success` and `archive.done` mean)."""
        trigger = self.trigger_for(JOB_END_ROLES["success"])
        return [t.dest for t in self.transitions if t.trigger == trigger]

    def sources_of(self, trigger: str) -> list[str]:
        out: list[str] = []
        for t in self.transitions:
            if t.trigger == trigger:
                out.extend(s for s in t.sources if s not in out)
        return out

    def dest_of(self, trigger: str, source: str) -> str | None:
        for t in self.transitions:
            if t.trigger == trigger and source in t.sources:
                return t.dest
        return None


def _names(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise SpecError(f"{where}: expected a name or a list of names, got {value!r}")


def load_spec(path: Path | str | None = None) -> MachineSpec:
    path = Path(path) if path else default_spec_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read the machine spec: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top")
    states = []
    for i, raw in enumerate(data.get("states") or []):
        where = f"{path}: states[{i}]"
        if not isinstance(raw, dict) or "name" not in raw:
            raise SpecError(f"{where}: each state needs a name")
        unknown = set(raw) - _STATE_KEYS
        if unknown:
            raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
        if raw["name"] not in _CORE_STATES and not raw.get("why"):
            raise SpecError(
                f"{where}: state {raw['name']!r} is not one of the design's states; "
                "add `why:` saying what it adds"
            )
        states.append(
            StateSpec(
                name=raw["name"],
                description=raw.get("description", ""),
                step=raw.get("step"),
                worker=bool(raw.get("worker", False)),
                terminal=bool(raw.get("terminal", False)),
                holds_slot=bool(raw.get("holds_slot", False)),
                job_may_run=bool(raw.get("job_may_run", False)),
                on_enter=_names(raw.get("on_enter"), where + ".on_enter"),
                on_exit=_names(raw.get("on_exit"), where + ".on_exit"),
            )
        )
    names = [s.name for s in states]
    if len(set(names)) != len(names):
        raise SpecError(f"{path}: a state is declared twice")
    missing = [n for n in _CORE_STATES if n not in names]
    if missing:
        raise SpecError(f"{path}: the design's states are missing: {missing}")
    transitions = []
    for i, raw in enumerate(data.get("transitions") or []):
        where = f"{path}: transitions[{i}]"
        if not isinstance(raw, dict):
            raise SpecError(f"{where}: expected a mapping")
        unknown = set(raw) - _TRANSITION_KEYS
        if unknown:
            raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("trigger", "source", "dest"):
            if key not in raw:
                raise SpecError(f"{where}: `{key}` is required")
        if raw["trigger"] not in _CORE_TRIGGERS and not raw.get("why"):
            raise SpecError(
                f"{where}: trigger {raw['trigger']!r} is not one of the design's transitions; "
                "add `why:` saying what it adds"
            )
        sources = _names(raw["source"], where + ".source")
        for s in (*sources, raw["dest"]):
            if s not in names:
                raise SpecError(f"{where}: unknown state {s!r}")
        callbacks = {k: _names(raw[k], f"{where}.{k}") for k in _CALLBACK_KEYS if raw.get(k)}
        roles = _names(raw.get("role"), where + ".role")
        for role in roles:
            if role not in ROLES:
                raise SpecError(f"{where}.role: unknown role {role!r}; roles: {', '.join(ROLES)}")
        transitions.append(
            TransitionSpec(
                trigger=raw["trigger"],
                sources=sources,
                dest=raw["dest"],
                description=raw.get("description", ""),
                callbacks=callbacks,
                roles=roles,
            )
        )
    spec = MachineSpec(
        path=path,
        initial=data.get("initial", "detected"),
        states=tuple(states),
        transitions=tuple(transitions),
    )
    if spec.initial not in names:
        raise SpecError(f"{path}: initial state {spec.initial!r} is not declared")
    for role in ONE_TRIGGER:
        if len(spec.triggers_for(role)) > 1:
            raise SpecError(
                f"{path}: role {role!r} is given to several triggers: "
                + ", ".join(spec.triggers_for(role))
            )
    for role in REQUIRED_ROLES:
        if not spec.triggers_for(role):
            raise SpecError(f"{path}: no transition has the role {role!r}, which the engine needs")
    for s in states:
        if s.terminal and s.holds_slot:
            raise SpecError(f"{path}: terminal state {s.name!r} cannot hold a slot")
        if s.job_may_run and not s.holds_slot:
            raise SpecError(f"{path}: state {s.name!r} may have a job but holds no slot")
        if s.terminal and s.step:
            raise SpecError(f"{path}: terminal state {s.name!r} cannot have a step")
        if s.step and s.step != POLL and s.name not in spec.sources_of(s.step):
            raise SpecError(
                f"{path}: state {s.name!r} has step {s.step!r}, "
                "but no transition with that trigger leaves it"
            )
        # a case in a state nothing can end would be retried every tick, for ever, and an
        # operator could not stop it
        for role, what in (("fail", "a permanent error"), ("request", "an operator's cancel")):
            if not s.terminal and not any(
                s.name in spec.sources_of(t) for t in spec.triggers_for(role)
            ):
                raise SpecError(
                    f"{path}: state {s.name!r} is not terminal but no transition with the role "
                    f"{role!r} leaves it: {what} could not end a case there"
                )
    return spec
