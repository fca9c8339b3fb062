"""When to renew: pure decisions from a certificate, its config and a clock.

Lifetimes shrink (90 → 64 → 45 days in 2027–2028), so the backstop is a share
of each certificate's own lifetime, never a fixed number of days: renew at 1/3
of the lifetime left, 1/2 when the lifetime is under 10 days (Let's Encrypt's
integration guidance), unless `renew_before_days` says otherwise. The CA's ARI
window, when it has one, comes first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from certd.config import CertificateConfig
from certd.store.models import IssuedCertificate

SHORT_LIFETIME = dt.timedelta(days=10)


@dataclass(frozen=True)
class RenewalDecision:
    due: bool
    reason: str
    renew_at: dt.datetime | None  # when it becomes due (None: now / unknown)


def backstop_time(not_before: dt.datetime, not_after: dt.datetime,
                  renew_before_days: float | None = None) -> dt.datetime:
    if renew_before_days is not None:
        return not_after - dt.timedelta(days=renew_before_days)
    lifetime = not_after - not_before
    share = 2 if lifetime < SHORT_LIFETIME else 3
    return not_after - lifetime / share


def config_mismatch(cert_cfg: CertificateConfig, issued: IssuedCertificate) -> str | None:
    if issued.domains.split(",") != list(cert_cfg.domains):
        return f"names changed in config ({issued.domains} → {','.join(cert_cfg.domains)})"
    if issued.key_type != cert_cfg.key_type:
        return f"key type changed in config ({issued.key_type} → {cert_cfg.key_type})"
    return None


def renewal_decision(cert_cfg: CertificateConfig, issued: IssuedCertificate | None, now: dt.datetime,
                     *, ari_renew_at: dt.datetime | None = None,
                     material_problem: str | None = None) -> RenewalDecision:
    """Is `issued` due for renewal at `now`, and why (or when it will be)."""
    if issued is None:
        return RenewalDecision(True, "no certificate issued yet", None)
    if now >= issued.not_after:
        return RenewalDecision(True, f"expired at {issued.not_after:%Y-%m-%d %H:%M} UTC", None)
    mismatch = config_mismatch(cert_cfg, issued)
    if mismatch:
        return RenewalDecision(True, mismatch, None)
    if material_problem:
        return RenewalDecision(True, material_problem, None)
    if ari_renew_at is not None:
        if now >= ari_renew_at:
            return RenewalDecision(True, "inside the CA's ARI renewal window", ari_renew_at)
        return RenewalDecision(False, "ARI window", ari_renew_at)
    at = backstop_time(issued.not_before, issued.not_after, cert_cfg.renew_before_days)
    if now >= at:
        rule = (f"less than {cert_cfg.renew_before_days:g} days left" if cert_cfg.renew_before_days
                else "backstop: a third of the lifetime left" if issued.not_after - issued.not_before
                >= SHORT_LIFETIME else "backstop: half of a short lifetime left")
        return RenewalDecision(True, rule, at)
    return RenewalDecision(False, "backstop", at)
