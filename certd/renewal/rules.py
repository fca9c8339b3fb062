"""When to renew, when to retry, when to look again: pure decisions from data and a clock.

Lifetimes shrink (90 → 64 → 45 days in 2027–2028), so the backstop is a share
of each certificate's own lifetime, never a fixed number of days: renew at 1/3
of the lifetime left, 1/2 when the lifetime is under 10 days (Let's Encrypt's
integration guidance), unless `renew_before_days` says otherwise. The CA's ARI
window (RFC 9773), when it has one, comes first.

Failures back off 1 min, 10 min, 100 min, then daily (Let's Encrypt's
integration guide), with jitter, and never earlier than the CA's Retry-After.
A certificate in its last tenth of life that still fails is "critical": it is
reported loudly on every attempt.

Nothing here reads a clock, a file or the network: callers pass `now` and the
data, so every rule has fast, exhaustive tests (tests/daemon/test_renew_rules.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from certd.config import CertificateConfig
from certd.issue.ari import AriWindow
from certd.store.models import IssuedCertificate

SHORT_LIFETIME = dt.timedelta(days=10)
# Let's Encrypt's suggested retry schedule; every later failure waits BACKOFF_CAP.
BACKOFF_STEPS = (dt.timedelta(minutes=1), dt.timedelta(minutes=10), dt.timedelta(minutes=100))
BACKOFF_CAP = dt.timedelta(days=1)
# Each backoff is stretched or shrunk by up to this share, so that many certificates
# failing together (a CA outage) do not all come back in the same second.
BACKOFF_JITTER = 0.1
# A `rateLimited` answer without Retry-After: retrying within minutes only burns more of
# the limit, so wait at least this long.
RATE_LIMIT_FALLBACK = dt.timedelta(minutes=100)
# RFC 9773 section 4.3.2: bound the CA's Retry-After; 4.3.3: six hours after a long-term error.
ARI_MAX_INTERVAL = dt.timedelta(days=1)
ARI_DEFAULT_RETRY = dt.timedelta(hours=6)
# The share of the lifetime at the end in which failures are reported loudly.
CRITICAL_SHARE = 10
# No check is scheduled sooner than this after the previous one (no hot loop on clock skew).
MIN_RESCHEDULE = dt.timedelta(seconds=1)


@dataclass(frozen=True)
class RenewalDecision:
    due: bool
    reason: str
    renew_at: dt.datetime | None  # when it becomes due (None: now / unknown)


# -- when to renew -------------------------------------------------------------------------

def backstop_time(not_before: dt.datetime, not_after: dt.datetime,
                  renew_before_days: float | None = None) -> dt.datetime:
    """`renew_before_days` is capped at half the lifetime: a 6-day certificate with
    `renew_before_days = 30` would otherwise be due the moment it is issued, and the
    daemon would order one after another until the CA's rate limit stops it."""
    lifetime = not_after - not_before
    if renew_before_days is not None:
        return not_after - min(dt.timedelta(days=renew_before_days), lifetime / 2)
    share = 2 if lifetime < SHORT_LIFETIME else 3
    return not_after - lifetime / share


def renew_before_capped(cert_cfg: CertificateConfig, issued: IssuedCertificate) -> bool:
    days = cert_cfg.renew_before_days
    return days is not None and dt.timedelta(days=days) > (issued.not_after - issued.not_before) / 2


def alarm_time(not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    """Start of the last tenth of the lifetime: failures from here on are reported loudly."""
    return not_after - (not_after - not_before) / CRITICAL_SHARE


def is_critical(not_before: dt.datetime | None, not_after: dt.datetime | None, now: dt.datetime) -> bool:
    """True in the last tenth of life, after expiry, and when there is no certificate at all."""
    if not_before is None or not_after is None:
        return True
    return now >= alarm_time(not_before, not_after)


def config_mismatch(cert_cfg: CertificateConfig, issued: IssuedCertificate) -> str | None:
    if issued.domains.split(",") != list(cert_cfg.domains):
        return f"names changed in config ({issued.domains} → {','.join(cert_cfg.domains)})"
    if issued.key_type != cert_cfg.key_type:
        return f"key type changed in config ({issued.key_type} → {cert_cfg.key_type})"
    return None


def renewal_decision(cert_cfg: CertificateConfig, issued: IssuedCertificate | None, now: dt.datetime,
                     *, ari_renew_at: dt.datetime | None = None,
                     material_problem: str | None = None) -> RenewalDecision:
    """Is `issued` due for renewal at `now`, and why (or when it will be).

    An ARI time later than the start of the last tenth of life is capped there: a CA
    suggesting a window after (or close to) expiry must not leave a site without a
    certificate.
    """
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
        at = min(ari_renew_at, alarm_time(issued.not_before, issued.not_after))
        if now >= at:
            return RenewalDecision(True, "inside the CA's ARI renewal window", at)
        return RenewalDecision(False, "ARI window", at)
    at = backstop_time(issued.not_before, issued.not_after, cert_cfg.renew_before_days)
    if now >= at:
        lifetime = issued.not_after - issued.not_before
        rule = (f"half the lifetime left (renew_before_days = {cert_cfg.renew_before_days:g} is more than "
                f"half of this certificate's {lifetime.total_seconds() / 86400:g}-day lifetime)"
                if renew_before_capped(cert_cfg, issued)
                else f"less than {cert_cfg.renew_before_days:g} days left" if cert_cfg.renew_before_days
                else "backstop: a third of the lifetime left" if lifetime >= SHORT_LIFETIME
                else "backstop: half of a short lifetime left")
        return RenewalDecision(True, rule, at)
    return RenewalDecision(False, "backstop", at)


def names_overlap(old_domains: str, new_domains: list[str]) -> bool:
    """RFC 9773 `replaces` only makes sense when the new order shares a name with the old cert."""
    return bool(set(old_domains.split(",")) & set(new_domains))


# -- is the stored material still good? ----------------------------------------------------

def stored_material_problem(cert_pem: str, chain_pem: str, key_pem: str, now: dt.datetime) -> str | None:
    """Why the stored certificate cannot be served as is (renew at once), or None.

    Checks what a TLS client would trip over: unparsable PEM, a key that does not
    belong to the certificate, a chain whose signatures do not link up, or a CA
    certificate in the chain that has expired.
    """
    from certd.issue.keys import load_key, split_pem_chain

    try:
        leaf = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return "the stored certificate is unreadable"
    try:
        key = load_key(key_pem)
    except (ValueError, TypeError):
        return "the stored private key is unreadable"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            key.public_key().public_bytes(serialization.Encoding.DER, spki):
        return "the private key does not match the certificate"
    try:
        chain = [x509.load_pem_x509_certificate(p.encode()) for p in split_pem_chain(chain_pem)]
    except ValueError:
        return "the stored chain is unreadable"
    child = leaf
    for parent in chain:
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            return (f"the chain no longer verifies: {child.subject.rfc4514_string()} "
                    f"is not signed by {parent.subject.rfc4514_string()}")
        if now > parent.not_valid_after_utc:
            return f"the chain no longer verifies: {parent.subject.rfc4514_string()} expired " \
                   f"{parent.not_valid_after_utc:%Y-%m-%d}"
        child = parent
    return None


FileContent = bytes | None | OSError  # None: missing


def deployed_file_problems(expected: Mapping[str, bytes], found: Mapping[str, FileContent]) -> list[str]:
    """Target files that are missing, unreadable or hold something else than the current material."""
    problems = []
    for path, data in expected.items():
        content = found.get(path)
        if content is None:
            problems.append(f"{path} is missing")
        elif isinstance(content, OSError):
            problems.append(f"{path} is unreadable ({content.strerror or content})")
        elif content != data:
            problems.append(f"{path} holds other content than the current certificate")
    return problems


# -- failures --------------------------------------------------------------------------------

def backoff_delay(failures: int, jitter: float = 0.0) -> dt.timedelta:
    """Wait after the `failures`-th failure in a row; `jitter` in [-1, 1] moves it by ±10%."""
    if failures < 1:
        return dt.timedelta(0)
    base = BACKOFF_STEPS[failures - 1] if failures <= len(BACKOFF_STEPS) else BACKOFF_CAP
    jitter = max(-1.0, min(1.0, jitter))
    return base * (1 + BACKOFF_JITTER * jitter)


def next_attempt_time(now: dt.datetime, failures: int, *, jitter: float = 0.0,
                      retry_after: dt.datetime | None = None, rate_limited: bool = False) -> dt.datetime:
    """When to try again after a failure: the backoff step, never before the CA's Retry-After."""
    at = now + backoff_delay(failures, jitter)
    if rate_limited and retry_after is None:
        at = max(at, now + RATE_LIMIT_FALLBACK)
    if retry_after is not None:
        at = max(at, retry_after)
    return at


def in_backoff(next_attempt_at: dt.datetime | None, now: dt.datetime) -> bool:
    return next_attempt_at is not None and now < next_attempt_at


# -- ARI (RFC 9773) ----------------------------------------------------------------------

def ari_renewal_time(window: AriWindow, fraction: float, *, previous_window: AriWindow | None = None,
                     previous_pick: dt.datetime | None = None) -> dt.datetime:
    """A uniformly random time in the window (`fraction` in [0, 1)), kept while the window stays.

    RFC 9773 section 4.2 asks for a random time inside the suggested window. Picking
    again at every check would drift the effective time towards the window's start;
    keeping the pick until the CA moves the window does not.
    """
    if previous_pick is not None and previous_window == window:
        return previous_pick
    if window.end <= window.start:
        return window.start
    fraction = max(0.0, min(1.0, fraction))
    return window.start + (window.end - window.start) * fraction


def next_ari_check(now: dt.datetime, retry_after: dt.datetime | None,
                   min_interval: dt.timedelta) -> dt.datetime:
    """When to ask the CA again: its Retry-After, bounded to [min_interval, 1 day]."""
    wanted = (retry_after - now) if retry_after is not None else ARI_DEFAULT_RETRY
    floor = min(min_interval, ARI_MAX_INTERVAL)
    return now + max(floor, min(wanted, ARI_MAX_INTERVAL))


def ari_check_due(now: dt.datetime, *, current_cert_id: str | None, checked_cert_id: str | None,
                  next_check_at: dt.datetime | None) -> bool:
    """Ask ARI when the certificate changed since the last answer, or the CA's Retry-After passed."""
    if current_cert_id is None:
        return False
    if checked_cert_id != current_cert_id or next_check_at is None:
        return True
    return now >= next_check_at


# -- when to look again --------------------------------------------------------------------

def next_check_time(now: dt.datetime, decision: RenewalDecision, *, max_interval: dt.timedelta,
                    not_after: dt.datetime | None = None, next_attempt_at: dt.datetime | None = None,
                    ari_next_check_at: dt.datetime | None = None,
                    pending_retry_at: dt.datetime | None = None) -> dt.datetime:
    """The earliest moment anything about this certificate can change.

    That is the renewal time (or, when due, the end of the backoff), the next ARI
    answer, a pending redeploy/hook retry, the expiry (the reason changes), and at
    most `max_interval` from now so files on disk are looked at regularly.
    """
    candidates = [now + max_interval]
    if decision.due:
        candidates.append(next_attempt_at or now)
    elif decision.renew_at is not None:
        candidates.append(decision.renew_at)
    # Moments already past were acted on by the check that computes this; only future ones count.
    candidates += [m for m in (not_after, ari_next_check_at, pending_retry_at) if m is not None and m > now]
    return max(min(candidates), now + MIN_RESCHEDULE)
