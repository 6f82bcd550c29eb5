"""The core's context: what the tick's helpers may use of the engine, typed.

The helpers (caseflow.core.admission, .jobs, .wrapup, .operator_requests, .outcomes, .lanes
and the case model) each take a `Core`, never the `Engine` class: this Protocol is the whole
of what they see. The `Engine` is its one implementation (mypy checks that it is one, where
the engine passes itself to them). The way of a case through the core:

    admission.detect -> store (a `detected` row)
    Engine.tick -> Engine.step -> case_model.Case (the machine's callbacks) -> store
                -> lanes (a step in the host's lane) -> outcomes.settle (what it ran into)
                -> jobs.poll / jobs.finish / jobs.stop -> wrapup.wrap_up

Nothing here imports the engine, so the helpers do not either (tests/test_structure.py
keeps the import graph free of cycles).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..config import Config
    from ..inbox import InboxFolders
    from ..spec import MachineSpec
    from ..store import CaseRow, Store
    from .hosts import Host, HostHealth
    from .machine import CaseMachine
    from .workers import InFlight


class Wakes(Protocol):
    """Wakes the daemon's loop (its self-pipe, caseflow.daemon.Waker)."""

    def wake(self) -> None: ...


class Watches(Protocol):
    """The inbox watcher's side the core reads (caseflow.inbox.InboxWatcher)."""

    def drain(self) -> tuple[set[str], set[str]]: ...

    def last_activity(self, name: str) -> float | None: ...


class Settles(Protocol):
    """What a step ran into, settled (caseflow.core.outcomes.Outcomes)."""

    def settle(
        self,
        row: CaseRow,
        what: str,
        exc: BaseException,
        *,
        patient: bool = False,
        bug_fails: bool = False,
        trace: bool = True,
    ) -> None:
        """The retry policy applied: skip, back off, pause the host, stop the job, fail."""
        ...

    def fail(self, case_id: int, reason: str) -> bool:
        """End the case in failure (its job stopped first, if one may run)."""
        ...

    def stop_first(self, row: CaseRow, reason: str) -> bool:
        """Stop the case's job before it ends with `reason`; False when none may run."""
        ...


class Dispatches(Protocol):
    """Work of a case in its host's lane (caseflow.core.lanes.Lanes)."""

    def step(self, row: CaseRow, trigger: str, **kwargs: Any) -> None: ...

    def call(
        self, row: CaseRow, fn: Callable[..., object], *args: Any, short: bool = False
    ) -> None: ...


class Rescans(Protocol):
    """The inbox's listing (caseflow.core.admission.Admission)."""

    def rescan_soon(self) -> None:
        """List the whole inbox at the next tick (a folder was found replaced)."""
        ...


class Core(Protocol):
    """The engine as the core's helpers see it."""

    # what it runs on
    config: Config
    spec: MachineSpec
    store: Store
    machine: CaseMachine
    hosts: dict[str, Host]
    health: HostHealth
    folders: InboxFolders
    inflight: InFlight
    watcher: Watches | None
    instance: str  # the store's id, in every job's label
    clock: Callable[[], float]  # the wall clock: times kept in the store
    monotonic: Callable[[], float]  # the in-memory timers' clock, never stepped back

    # what the spec says, looked up once
    job_states: set[str]  # the spec's `job_may_run` states
    FAIL: str  # the trigger of the `fail` role

    # the parts of the tick the helpers hand work to (read-only: the engine's own objects)
    @property
    def outcomes(self) -> Settles:
        """What a step ran into: retry, pause the host, stop the job, fail."""
        ...

    @property
    def lanes(self) -> Dispatches:
        """A step or a call in the host's lane (inline when not pooled)."""
        ...

    @property
    def admission(self) -> Rescans:
        """The inbox: new folders, the next full listing."""
        ...

    # what the helpers keep between ticks, per case
    quiet_since: dict[int, tuple[float | None, float, float]]  # Case.is_quiet
    stop_began: dict[int, float]  # jobs.stop: monotonic time of the stop's first look

    @property
    def pooled(self) -> bool:
        """Steps run in the hosts' lanes (the daemon), not inline (one-shot commands)."""
        ...

    def wake(self) -> None: ...

    def host_of(self, row: CaseRow) -> Host: ...

    def step(self, row: CaseRow, trigger: str, **kwargs: Any) -> bool | None:
        """Fire `trigger` for the case (caseflow.core.engine.Engine.step)."""
        ...

    # the inbox (caseflow.core.admission)
    def forget_folder(self, path: str, inode: str | None) -> None: ...

    def last_activity(self, name: str) -> float | None: ...
