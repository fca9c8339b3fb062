"""Which issuance a gated listener serves: a pure function of the gate row and a clock.

Here, below the OCPP service and the trust rollover, so that `certd.serve.material`
(which the OCPP service uses) needs nothing from `certd.rollover`; the rollover's
gate decisions (`certd.rollover.gates`) use the same deadline rule.
"""

from __future__ import annotations

import datetime as dt


def deadline_for(served_not_after: dt.datetime, deadline_days: float) -> dt.datetime:
    """When the gate stops waiting: the previous certificate's last `deadline_days` begin."""
    return served_not_after - dt.timedelta(days=deadline_days)


def served_choice(
    *, current_id: int | None, served_id: int | None, served_not_after: dt.datetime | None,
    decided_id: int | None, deadline_at: dt.datetime | None, deadline_days: float,
    now: dt.datetime,
) -> int | None:
    """The issued certificate id a gated listener serves.

    The gate's `served_id` while it is valid and before its deadline; else the
    current one. A current issuance newer than `decided_id` (the engine has not
    looked at it yet) is held back too, under the same limits, so a periodic
    reload never slips past the gate.
    """
    if current_id is None or served_id is None or served_id == current_id:
        return current_id
    if served_not_after is None or served_not_after <= now:
        return current_id
    limit = deadline_at if decided_id == current_id else deadline_for(served_not_after, deadline_days)
    if limit is not None and now >= limit:
        return current_id
    return served_id
