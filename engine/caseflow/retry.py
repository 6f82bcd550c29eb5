"""The one retry policy: where what a step, a poll or other pooled work ran into becomes the
case's next move.

An outcome is one of five kinds. A success ends the case's failure streak (attempts and
`failing_since` go back to none; a good poll is a success too). A transient error is one more
attempt of the streak, with the next try after an exponential backoff that is persisted in the
store; only an unbroken streak lasting `retry.give_up_after_seconds` (or an error's own
`max_attempts`) ends the case. A permanent error ends the case at once, with the error as its
reason. A host error pauses the host, not the case. A bug (an error caseflow did not expect)
in pooled work is backed off like a transient one, so it is logged once per backoff instead of
once per tick (a broken wrap-up ran 9,017 ticks in 2 s, each logging a traceback); inside a
step it ends the case with "internal error" instead, so that it is seen.

The policy is data (`Policy`), the clock is the caller's (`now`), and every function here is
pure: the tests run them without sleeping or a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import HostError, PermanentError, StaleCase, TransientError
from .settings import not_negative, positive, setting
from .text import plural

if TYPE_CHECKING:
    from .store import CaseRow

TRANSIENT, PERMANENT, HOST, STALE, BUG = "transient", "permanent", "host", "stale", "bug"


def kind_of(exc: BaseException) -> str:
    """Which kind of outcome an exception is (a bare Exception is a bug, never retried as
    if it were a network error: it is backed off and logged)."""
    if isinstance(exc, PermanentError):
        return PERMANENT
    if isinstance(exc, HostError):
        return HOST
    if isinstance(exc, TransientError):
        return TRANSIENT
    if isinstance(exc, StaleCase):
        return STALE
    # A thread or a process that could not start: the process (or its unit: systemd's
    # TasksMax) is at its limit of tasks for now, e.g. while clients hold the status page's
    # connections. Nothing is wrong with the case and a later try will find tasks free, so
    # it is retried with the backoff; a bug inside a step would end the case ("internal
    # error during upload: can't start new thread"). threading.Thread.start raises
    # RuntimeError("can't start new thread"); a fork or clone (subprocess) OSError EAGAIN,
    # which Python raises as BlockingIOError (as it does EAGAIN of non-blocking I/O: "try
    # again" there too).
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return TRANSIENT
    if isinstance(exc, BlockingIOError):
        return TRANSIENT
    return BUG


def short(exc: BaseException, limit: int = 500) -> str:
    """An error as one can show it on a case: its message, at most `limit` characters."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Policy:
    """How long to wait between attempts and when to stop trying: the configuration's
    `retry:` section is read into it (`Config.retry`)."""

    initial_seconds: float = setting(
        5.0, positive, "first backoff after a transient error; doubles each attempt"
    )
    max_seconds: float = setting(300.0, positive, "the longest backoff")
    give_up_after_seconds: float = setting(
        24 * 3600.0,
        positive,
        "a case failing transiently this long without a success between ends in failure",
    )
    infrastructure_reruns: int = setting(
        2,
        not_negative,
        "a case whose job the infrastructure took away (its node failed, it was preempted, its"
        " host rebooted) runs again by itself this many times; then it ends in failure",
    )

    def delay(self, attempts: int) -> float:
        """The wait after the `attempts`-th failure in a row: doubling, capped."""
        return min(self.max_seconds, self.initial_seconds * (2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Streak:
    """A case's unbroken run of failures, as the store keeps it."""

    attempts: int = 0
    failing_since: float | None = None

    @classmethod
    def of(cls, row: CaseRow) -> Streak:
        return cls(row.attempts, row.failing_since)

    @property
    def broken(self) -> bool:
        """Something failed since the last success (a success has something to reset)."""
        return self.attempts > 0 or self.failing_since is not None


@dataclass(frozen=True)
class Retry:
    """Try again at `next_attempt_at`; `error` is what the case shows meanwhile."""

    streak: Streak
    next_attempt_at: float
    error: str


@dataclass(frozen=True)
class GiveUp:
    """The streak is long enough: the case ends with `reason`."""

    streak: Streak
    reason: str


def after_failure(
    policy: Policy,
    streak: Streak,
    error: str,
    now: float,
    *,
    what: str = "",
    max_attempts: int | None = None,
    patient: bool = False,
) -> Retry | GiveUp:
    """One more failure of the streak. `error` is the failure's message, `what` the work that
    failed (shown with it while the case waits); `max_attempts` an error's own limit (output
    that stays unreadable); `patient`: never give up (stopping a job that may still run)."""
    attempts = streak.attempts + 1
    since = now if streak.failing_since is None else streak.failing_since
    grown = Streak(attempts, since)
    if not patient:
        if max_attempts and attempts >= max_attempts:
            return GiveUp(grown, f"{error} (after {plural(attempts, 'attempt')})")
        if now - since >= policy.give_up_after_seconds:
            return GiveUp(
                grown,
                f"gave up after {plural(attempts, 'attempt')} over {now - since:.0f} s; "
                f"last error: {error}",
            )
    return Retry(grown, now + policy.delay(attempts), f"{what}: {error}" if what else error)


def after_error(
    policy: Policy,
    streak: Streak,
    exc: BaseException,
    now: float,
    what: str,
    *,
    patient: bool = False,
) -> Retry | GiveUp:
    """A transient error or a bug in pooled work: one more failure of the streak."""
    if kind_of(exc) == BUG:
        return after_failure(
            policy,
            streak,
            f"internal error: {short(exc)} (see the log)",
            now,
            what=what,
            patient=patient,
        )
    return after_failure(
        policy,
        streak,
        short(exc),
        now,
        what=what,
        patient=patient,
        max_attempts=getattr(exc, "max_attempts", None),
    )
