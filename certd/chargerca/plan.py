"""What certd does next with one connected charger's certificate (pure).

In this order, one thing at a time (OCPP allows one outstanding request per direction):

1. deliver again a certificate the charger has not answered CertificateSigned for (it was
   offline or timed out), when its back-off has passed;
2. while any delivery is still waiting: nothing else;
3. the profile 2 -> 3 move, queued when the charger accepted its certificate over a
   profile-2 listener (and `[ocpp.charger_ca.move]` is configured);
4. a renewal trigger when `certd.chargerca.timing.renewal_reason` gives one and the
   back-off of earlier triggers has passed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from certd.chargerca import timing
from certd.chargerca.records import CertView, RenewalView, current
from certd.store.charger_ca import CERT_ISSUED, DELIVERY_PENDING


@dataclass(frozen=True)
class Work:
    charger_id: str
    kind: Literal["deliver", "move", "trigger"]
    reason: str
    serial: str | None = None  # deliver: which certificate


def plan(charger_id: str, certs: Sequence[CertView], renewal: RenewalView | None,
         now: dt.datetime, *, active_ca: str | None, enroll: bool, factory_certificate: bool,
         move_possible: bool) -> Work | None:
    waiting = [c for c in certs if c.state == CERT_ISSUED and c.delivery == DELIVERY_PENDING]
    if waiting:
        newest = waiting[-1]
        if timing.may_try(newest.next_delivery_at, now):
            return Work(charger_id, "deliver", "certificate not yet delivered", newest.serial)
        return None
    next_attempt = renewal.next_attempt_at if renewal else None
    if renewal is not None and renewal.move_pending and move_possible:
        if timing.may_try(next_attempt, now):
            return Work(charger_id, "move", "certificate accepted over security profile 2")
        return None
    active = current(certs)
    reason = timing.renewal_reason(
        active.life() if active else None, now, active_ca=active_ca,
        requested=renewal is not None and renewal.requested_at is not None,
        enroll=enroll, factory_certificate=factory_certificate)
    if reason is None or not timing.may_try(next_attempt, now):
        return None
    return Work(charger_id, "trigger", reason)
