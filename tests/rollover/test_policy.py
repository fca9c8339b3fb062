"""The retry policy (pure): when a charger is due, and what an attempt's outcome leads to."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from certd.rollover import policy
from certd.rollover.gates import Identity
from certd.rollover.plans import Confirmed, ListenerPlan
from certd.store.rollover import CHARGER_CONFIRMED, CHARGER_FAILED, CHARGER_PENDING

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone.utc)
SECOND = dt.timedelta(seconds=1)
RETRY_AFTER = 3600.0
ROOT_A = Identity("CN=Root A", "aa")
ROOT_B = Identity("CN=Root B", "bb")
PLAN = ListenerPlan("main", False, {"fleet": 2}, (), frozenset({ROOT_B}), frozenset({ROOT_B}))


# -- may_try --------------------------------------------------------------------------------------

@pytest.mark.parametrize("next_attempt_at, retry_now, allowed", [
    (None, False, True),               # never failed, or offline last time
    (NOW - SECOND, False, True),       # back-off passed
    (NOW, False, True),                # passes exactly now
    (NOW + SECOND, False, False),      # still backing off
    (NOW + SECOND, True, True),        # a reboot or an operator asks for a retry now
    (None, True, True),
])
def test_may_try(next_attempt_at: dt.datetime | None, retry_now: bool, allowed: bool) -> None:
    assert policy.may_try(next_attempt_at, NOW, retry_now=retry_now) is allowed


# -- charger_due ----------------------------------------------------------------------------------

@pytest.mark.parametrize("plan", [None, ListenerPlan("main", False)])  # no gate / no bundle version yet
def test_ungated_listener_is_due_only_to_record_where_the_charger_is(plan: ListenerPlan | None) -> None:
    for last, confirmed, not_before, retry in itertools.product(
            (None, "other"), (None, Confirmed({}, frozenset())), (None, NOW + SECOND), (False, True)):
        assert policy.charger_due(plan, "main", last, confirmed, not_before, NOW, retry_now=retry) is True
        assert policy.charger_due(plan, "main", "main", confirmed, not_before, NOW, retry_now=retry) is False


def test_a_charger_holding_the_plan_is_never_due() -> None:
    holds = Confirmed({"fleet": 2}, frozenset({ROOT_A, ROOT_B}))
    for not_before, retry in itertools.product((None, NOW - SECOND, NOW + SECOND), (False, True)):
        assert policy.charger_due(PLAN, "main", "main", holds, not_before, NOW, retry_now=retry) is False


@pytest.mark.parametrize("confirmed", [
    None,                                                   # never confirmed
    Confirmed({"fleet": 1}, frozenset({ROOT_A, ROOT_B})),   # an older bundle version
    Confirmed({"other": 2}, frozenset({ROOT_B})),           # another bundle only
    Confirmed({"fleet": 2}, frozenset({ROOT_A})),           # same version, lacks the priority root
])
def test_a_charger_lacking_the_plan_is_due_when_its_back_off_allows(confirmed: Confirmed | None) -> None:
    due = lambda not_before, retry: policy.charger_due(  # noqa: E731
        PLAN, "main", "main", confirmed, not_before, NOW, retry_now=retry)
    assert due(None, False) and due(NOW - SECOND, False) and due(NOW, False)
    assert not due(NOW + SECOND, False)
    assert due(NOW + SECOND, True)


def test_a_charger_new_on_a_gated_listener_is_due() -> None:
    assert policy.charger_due(PLAN, "main", None, None, None, NOW, retry_now=False)
    assert policy.charger_due(PLAN, "main", "other", None, None, NOW, retry_now=False)


# -- timeout_backoff --------------------------------------------------------------------------------

@pytest.mark.parametrize("failures, seconds", [
    (0, 60.0), (1, 60.0), (2, 120.0), (3, 240.0), (4, 480.0), (5, 960.0), (6, 1920.0),
    (7, 3600.0), (8, 3600.0), (100, 3600.0), (10_000, 3600.0),  # capped; no float overflow
])
def test_timeout_backoff_doubles_up_to_retry_after(failures: int, seconds: float) -> None:
    assert policy.timeout_backoff(failures, RETRY_AFTER) == seconds


def test_timeout_backoff_never_exceeds_a_short_retry_after() -> None:
    assert [policy.timeout_backoff(n, 90.0) for n in range(1, 5)] == [60.0, 90.0, 90.0, 90.0]
    assert policy.timeout_backoff(1, 10.0) == 10.0


# -- after_attempt ----------------------------------------------------------------------------------

@pytest.mark.parametrize("failures_before", [0, 1, 7])
def test_accepted_confirms_and_resets(failures_before: int) -> None:
    assert policy.after_attempt("Accepted", failures_before, NOW, RETRY_AFTER) == policy.NextTry(
        CHARGER_CONFIRMED, 0, None)


@pytest.mark.parametrize("outcome", sorted(policy.HARD_FAILURES))
@pytest.mark.parametrize("failures_before", [0, 3])
def test_hard_failures_wait_retry_after(outcome: str, failures_before: int) -> None:
    assert policy.after_attempt(outcome, failures_before, NOW, RETRY_AFTER) == policy.NextTry(
        CHARGER_FAILED, failures_before + 1, NOW + dt.timedelta(seconds=RETRY_AFTER))


def test_the_hard_failures_are_the_charger_refusals_and_certd_s_own_problems() -> None:
    assert policy.HARD_FAILURES == {"Rejected", "Failed", "NotSupported", "error",
                                    "needs-cross-sign", "store-full", "too-large"}


def test_timeouts_back_off_and_stay_pending() -> None:
    failures, waits = 0, []
    for _ in range(8):
        next_try = policy.after_attempt("timeout", failures, NOW, RETRY_AFTER)
        assert next_try.state == CHARGER_PENDING and next_try.failures == failures + 1
        assert next_try.next_attempt_at is not None
        waits.append((next_try.next_attempt_at - NOW).total_seconds())
        failures = next_try.failures
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600]


@pytest.mark.parametrize("outcome", ["offline", "something new"])
def test_other_outcomes_wait_for_the_next_connection(outcome: str) -> None:
    assert policy.after_attempt(outcome, 2, NOW, RETRY_AFTER) == policy.NextTry(CHARGER_PENDING, 3, None)


def test_a_recorded_outcome_makes_the_charger_due_exactly_as_the_policy_says() -> None:
    """after_attempt and charger_due agree: a failed charger is due again at its next_attempt_at."""
    for outcome in (*sorted(policy.HARD_FAILURES), "timeout", "offline"):
        next_try = policy.after_attempt(outcome, 0, NOW, RETRY_AFTER)
        when = next_try.next_attempt_at
        assert policy.charger_due(PLAN, "main", "main", None, when, NOW, retry_now=False) is (when is None)
        later = when or NOW
        assert policy.charger_due(PLAN, "main", "main", None, when, later, retry_now=False)
