"""The retry policy as pure functions: no store, no sleeping, the clock is a number."""

import pytest

from caseflow.errors import HostError, PermanentError, StaleCase, TransientError
from caseflow.retry import (BUG, HOST, PERMANENT, STALE, TRANSIENT, GiveUp, Policy, Retry,
                            Streak, after_error, after_failure, kind_of, short)

POLICY = Policy(initial_seconds=5, max_seconds=300, give_up_after_seconds=3600)
RESET = Streak()  # what any success leaves


def test_backoff_doubles_from_the_first_delay_up_to_the_longest():
    assert [POLICY.delay(n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]


def test_a_first_failure_starts_the_streak_and_schedules_the_next_try():
    verdict = after_failure(POLICY, RESET, "network down", 1000.0, what="upload")
    assert verdict == Retry(Streak(1, 1000.0), 1005.0, "upload: network down")


def test_the_streak_keeps_when_it_began():
    streak = Streak(3, 1000.0)
    verdict = after_failure(POLICY, streak, "still down", 2000.0)
    assert verdict.streak == Streak(4, 1000.0) and verdict.next_attempt_at == 2040.0


def test_only_an_unbroken_streak_as_long_as_the_window_gives_up():
    near = after_failure(POLICY, Streak(7, 1000.0), "down", 1000.0 + 3599)
    assert isinstance(near, Retry)
    over = after_failure(POLICY, Streak(7, 1000.0), "down", 1000.0 + 3600)
    assert over == GiveUp(Streak(8, 1000.0),
                          "gave up after 8 attempts over 3600 s; last error: down")


def test_a_success_resets_the_streak_so_two_blips_a_day_apart_do_not_add_up():
    first = after_failure(POLICY, RESET, "blip", 0.0)
    assert first.streak.broken and not RESET.broken
    second = after_failure(POLICY, RESET, "blip", 25 * 3600.0)  # a success came between
    assert isinstance(second, Retry) and second.streak == Streak(1, 25 * 3600.0)
    unreset = after_failure(POLICY, first.streak, "blip", 25 * 3600.0)
    assert isinstance(unreset, GiveUp)  # what happened when good polls did not reset it


def test_an_errors_own_attempt_limit():
    exc = TransientError("the queue's output is not JSON")
    exc.max_attempts = 3
    assert isinstance(after_error(POLICY, Streak(1, 0.0), exc, 10.0, "poll"), Retry)
    verdict = after_error(POLICY, Streak(2, 0.0), exc, 20.0, "poll")
    assert verdict == GiveUp(Streak(3, 0.0), "the queue's output is not JSON (after 3 attempts)")


def test_a_patient_streak_never_gives_up():
    verdict = after_failure(POLICY, Streak(500, 0.0), "cannot cancel", 10 ** 9, patient=True)
    assert isinstance(verdict, Retry) and verdict.next_attempt_at == 10 ** 9 + 300


def test_a_bug_backs_off_like_a_transient_error_and_says_it_is_one():
    verdict = after_error(POLICY, RESET, ZeroDivisionError("division by zero"), 0.0, "wrap-up")
    assert verdict == Retry(Streak(1, 0.0), 5.0,
                            "wrap-up: internal error: division by zero (see the log)")


@pytest.mark.parametrize("exc, kind", [
    (TransientError("x"), TRANSIENT), (PermanentError("x"), PERMANENT), (HostError("x"), HOST),
    (StaleCase("x"), STALE), (KeyError("x"), BUG), (OSError("x"), BUG)])
def test_kinds_of_outcome(exc, kind):
    assert kind_of(exc) == kind


def test_errors_are_shown_short():
    assert short(TransientError("")) == "TransientError"
    assert len(short(TransientError("x" * 2000))) == 500
