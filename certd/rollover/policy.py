"""When a charger is provisioned (again): pure functions of what is known about it and a clock.

- `charger_due`: from the engine's memory, does a connected charger lack what its
  listener's plan says it should hold, and may it be tried now?
- `may_try`: has its back-off passed (or does a reboot / an operator ask for a retry now)?
- `after_attempt`: the charger's state, failure count and next try after an attempt.
  A hard failure (the charger refused, or certd cannot send what it needs) waits
  `retry_after` seconds or its next boot; a timeout backs off from 60 seconds,
  doubling up to `retry_after`; a charger that went offline is tried when it connects.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from certd.rollover.gates import plan_covered
from certd.rollover.plans import Confirmed, ListenerPlan
from certd.store.rollover import CHARGER_CONFIRMED, CHARGER_FAILED, CHARGER_PENDING

# Outcomes after which a charger waits `retry_after` (or its next boot) before the next try.
HARD_FAILURES = frozenset({"Rejected", "Failed", "NotSupported", "error", "needs-cross-sign",
                           "store-full", "too-large"})
TIMEOUT_BACKOFF_START = 60.0
_MAX_DOUBLINGS = 60  # 60 s * 2**60 is far beyond any retry_after; keeps the float finite


def may_try(next_attempt_at: dt.datetime | None, now: dt.datetime, *, retry_now: bool) -> bool:
    """Whether a charger's back-off allows a try now."""
    return retry_now or next_attempt_at is None or next_attempt_at <= now


def charger_due(plan: ListenerPlan | None, listener: str, last_listener: str | None,
                confirmed: Confirmed | None, not_before: dt.datetime | None, now: dt.datetime,
                *, retry_now: bool) -> bool:
    """Whether a charger connected to `listener` should be looked at now.

    Not gated (no plan, or no bundle version yet): only when the store does not yet say
    it was seen on this listener. Gated: when what it confirmed does not cover the plan
    and its back-off allows a try.
    """
    if plan is None or not plan.targets:
        return last_listener != listener
    if confirmed is not None and plan_covered(confirmed.bundles, confirmed.roots, plan.targets, plan.needed):
        return False
    return may_try(not_before, now, retry_now=retry_now)


def timeout_backoff(failures: int, retry_after: float) -> float:
    """Seconds to wait after the `failures`-th failure in a row, the last a timeout."""
    doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
    return min(retry_after, TIMEOUT_BACKOFF_START * 2 ** doublings)


@dataclass(frozen=True)
class NextTry:
    """A charger's row after an attempt: state, failures in a row, when it may be tried again."""

    state: str
    failures: int
    next_attempt_at: dt.datetime | None  # None: when it connects, or not at all (confirmed)


def after_attempt(outcome: str, failures: int, now: dt.datetime, retry_after: float) -> NextTry:
    """What follows an attempt that ended in `outcome` for a charger with `failures` before it."""
    if outcome == "Accepted":
        return NextTry(CHARGER_CONFIRMED, 0, None)
    failures += 1
    if outcome in HARD_FAILURES:
        return NextTry(CHARGER_FAILED, failures, now + dt.timedelta(seconds=retry_after))
    if outcome == "timeout":
        return NextTry(CHARGER_PENDING, failures,
                       now + dt.timedelta(seconds=timeout_backoff(failures, retry_after)))
    return NextTry(CHARGER_PENDING, failures, None)  # offline: tried again when it connects

