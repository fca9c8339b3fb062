"""When a charger certificate is renewed, and when certd warns (pure: facts and a clock).

- renew at two thirds of the certificate's life (a 2-year certificate: after 16 months),
  at once when the CA that issued it is no longer the active issuing CA (replaced),
  when the operator asked (`certd chargers renew-cert`), or when the charger has no
  certificate of certd's and enrolling is wanted (auto_enroll, or it connected with a
  manufacturer's certificate: OCPP A00.FR.406 recommends replacing it);
- alert once per certificate when it enters the last tenth of its life unrenewed;
- a failed request to a charger is retried after `base`, doubled per failure up to `cap`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

RENEW_AT = 2 / 3
ALERT_AT = 9 / 10

Stage = Literal["fresh", "renew", "last-tenth", "expired"]
Reason = Literal["requested", "enroll", "factory-certificate", "expired", "ca-replaced",
                 "two-thirds"]


@dataclass(frozen=True)
class CertLife:
    """The charger's newest usable certificate from certd (issued, active or superseded)."""

    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    ca_fingerprint: str


def fraction_elapsed(cert: CertLife, now: dt.datetime) -> float:
    life = (cert.not_after - cert.not_before).total_seconds()
    if life <= 0:
        return 1.0
    return (now - cert.not_before).total_seconds() / life


def stage(cert: CertLife, now: dt.datetime) -> Stage:
    """Where in its life a certificate is (for `certd chargers certs` and the alerts)."""
    if now >= cert.not_after:
        return "expired"
    elapsed = fraction_elapsed(cert, now)
    if elapsed >= ALERT_AT:
        return "last-tenth"
    if elapsed >= RENEW_AT:
        return "renew"
    return "fresh"


def renewal_at(cert: CertLife) -> dt.datetime:
    return cert.not_before + (cert.not_after - cert.not_before) * RENEW_AT


def renewal_reason(cert: CertLife | None, now: dt.datetime, *, active_ca: str | None,
                   requested: bool = False, enroll: bool = False,
                   factory_certificate: bool = False) -> Reason | None:
    """Why certd should ask this charger for a new CSR now (None: it should not)."""
    if requested:
        return "requested"
    if cert is None:
        if factory_certificate:
            return "factory-certificate"
        return "enroll" if enroll else None
    if now >= cert.not_after:
        return "expired"
    if active_ca is not None and cert.ca_fingerprint != active_ca:
        return "ca-replaced"
    if now >= renewal_at(cert):
        return "two-thirds"
    return None


def alert_due(cert: CertLife | None, alerted_serial: str | None, now: dt.datetime) -> bool:
    """A last-tenth alert for this certificate, unless one was sent for it already."""
    if cert is None or cert.serial == alerted_serial:
        return False
    return stage(cert, now) in ("last-tenth", "expired")


def retry_delay(failures: int, base: float, cap: float) -> dt.timedelta:
    """Wait after the `failures`-th failure in a row (1: base, 2: 2*base, ... at most cap)."""
    if failures <= 0:
        return dt.timedelta(0)
    return dt.timedelta(seconds=min(cap, base * 2 ** min(failures - 1, 40)))


def may_try(next_attempt_at: dt.datetime | None, now: dt.datetime) -> bool:
    return next_attempt_at is None or now >= next_attempt_at
