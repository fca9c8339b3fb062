"""certd.renewal.rules: every timing rule, as pure functions of data and a clock (no I/O, milliseconds)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certd.renewal import rules
from certd.config import CertificateConfig
from certd.issue.keys import key_to_pem
from certd.store.models import IssuedCertificate

T0 = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)
MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)


def cfg(**kw) -> CertificateConfig:  # type: ignore[no-untyped-def]
    return CertificateConfig(name="web", domains=kw.pop("domains", ["a.example.com"]), **kw)


def issued(lifetime: dt.timedelta, *, start: dt.datetime = T0, domains: str = "a.example.com",
           key_type: str = "rsa2048") -> IssuedCertificate:
    return IssuedCertificate(name="web", domains=domains, key_type=key_type, serial="1", not_before=start,
                             not_after=start + lifetime, issuer="x", cert_pem="", chain_pem="", key_pem="",
                             chain_fingerprints="[]", directory_url="https://ca/dir")


# -- backstop: a share of each certificate's own lifetime ---------------------------------

@pytest.mark.parametrize("lifetime_days, renew_after_days", [
    (90, 60),            # Let's Encrypt classic today: 30 days left
    (64, 64 * 2 / 3),    # from 2027-02-10
    (45, 30),            # from 2028-02-16: 15 days left, not "30 days before"
    (160 / 24, 160 / 48),  # shortlived profile (160 h): half the lifetime
    (9.99, 9.99 / 2),
    (10, 10 * 2 / 3),    # exactly ten days counts as not short
])
def test_backstop_follows_each_lifetime(lifetime_days: float, renew_after_days: float) -> None:
    lifetime = dt.timedelta(days=lifetime_days)
    at = rules.backstop_time(T0, T0 + lifetime)
    assert at - T0 == pytest.approx(dt.timedelta(days=renew_after_days), abs=dt.timedelta(seconds=1))
    cert = issued(lifetime)
    assert not rules.renewal_decision(cfg(), cert, at - dt.timedelta(seconds=1)).due
    decision = rules.renewal_decision(cfg(), cert, at)
    assert decision.due and decision.renew_at == at
    assert ("half" in decision.reason) == (lifetime < rules.SHORT_LIFETIME)


def test_seconds_long_pebble_lifetimes_use_the_same_rule() -> None:
    cert = issued(dt.timedelta(seconds=30))
    assert rules.renewal_decision(cfg(), cert, T0 + dt.timedelta(seconds=14)).due is False
    assert rules.renewal_decision(cfg(), cert, T0 + dt.timedelta(seconds=15)).due is True


def test_configured_renew_before_days_wins_over_the_share() -> None:
    cert = issued(90 * DAY)
    decision = rules.renewal_decision(cfg(renew_before_days=10), cert, T0 + 79 * DAY)
    assert not decision.due and decision.renew_at == T0 + 80 * DAY
    decision = rules.renewal_decision(cfg(renew_before_days=10), cert, T0 + 80 * DAY)
    assert decision.due and decision.reason == "less than 10 days left"


# -- at once ------------------------------------------------------------------------------

def test_no_certificate_expired_config_changes_and_material_problems_are_due_at_once() -> None:
    cert = issued(90 * DAY)
    assert rules.renewal_decision(cfg(), None, T0).reason == "no certificate issued yet"
    expired = rules.renewal_decision(cfg(), cert, T0 + 90 * DAY)
    assert expired.due and expired.reason.startswith("expired at")
    names = rules.renewal_decision(cfg(domains=["a.example.com", "b.example.com"]), cert, T0 + DAY)
    assert names.due and names.reason.startswith("names changed in config")
    key = rules.renewal_decision(cfg(key_type="ec-p256"), cert, T0 + DAY)
    assert key.due and key.reason == "key type changed in config (rsa2048 → ec-p256)"
    bad = rules.renewal_decision(cfg(), cert, T0 + DAY, material_problem="the chain no longer verifies: x")
    assert bad.due and bad.reason == "the chain no longer verifies: x"
    # The names' order matters (the first one is the CN chargers check).
    swapped = issued(90 * DAY, domains="b.example.com,a.example.com")
    assert rules.renewal_decision(cfg(domains=["a.example.com", "b.example.com"]), swapped, T0).due


# -- ARI first ------------------------------------------------------------------------------

def test_ari_time_replaces_the_backstop_in_both_directions() -> None:
    cert = issued(90 * DAY)
    early = T0 + 40 * DAY  # before the backstop (60 d): e.g. a mass revocation
    assert rules.renewal_decision(cfg(), cert, T0 + 41 * DAY, ari_renew_at=early).due
    late = T0 + 70 * DAY   # after the backstop: the CA asks to wait, certd waits
    decision = rules.renewal_decision(cfg(), cert, T0 + 65 * DAY, ari_renew_at=late)
    assert not decision.due and decision.reason == "ARI window" and decision.renew_at == late
    decision = rules.renewal_decision(cfg(), cert, late, ari_renew_at=late)
    assert decision.due and decision.reason == "inside the CA's ARI renewal window"


def test_an_ari_time_near_expiry_is_capped_at_the_last_tenth() -> None:
    cert = issued(90 * DAY)
    decision = rules.renewal_decision(cfg(), cert, T0, ari_renew_at=T0 + 89 * DAY)
    assert decision.renew_at == T0 + 81 * DAY


def test_ari_pick_is_uniform_in_the_window_and_kept_while_the_window_stays() -> None:
    window = rules.AriWindow(T0, T0 + 2 * DAY)
    assert rules.ari_renewal_time(window, 0.0) == T0
    assert rules.ari_renewal_time(window, 0.5) == T0 + DAY
    assert rules.ari_renewal_time(window, 1.0) == T0 + 2 * DAY
    assert rules.ari_renewal_time(window, 7.0) == T0 + 2 * DAY  # out-of-range randomness is clamped
    kept = rules.ari_renewal_time(window, 0.9, previous_window=window, previous_pick=T0 + HOUR)
    assert kept == T0 + HOUR
    moved = rules.AriWindow(T0 - DAY, T0)  # the CA moved it: pick again
    assert rules.ari_renewal_time(moved, 0.5, previous_window=window, previous_pick=T0 + HOUR) == T0 - DAY / 2
    assert rules.ari_renewal_time(rules.AriWindow(T0, T0), 0.7) == T0


@pytest.mark.parametrize("retry_after, floor, expected", [
    (6 * HOUR, 12 * HOUR, 12 * HOUR),  # Let's Encrypt's 6 h: about twice a day at most
    (18 * HOUR, 12 * HOUR, 18 * HOUR),  # the CA asks for longer: followed
    (3 * DAY, 12 * HOUR, DAY),          # never more than a day (RFC 9773 4.3.2)
    (30 * MIN, MIN, 30 * MIN),          # a lower configured floor follows the CA closely
    (dt.timedelta(seconds=5), MIN, MIN),
    (None, MIN, 6 * HOUR),              # no Retry-After or an error: six hours (RFC 9773 4.3.3)
    (None, 12 * HOUR, 12 * HOUR),
    (-HOUR, MIN, MIN),                  # a Retry-After in the past
    (HOUR, 2 * DAY, DAY),               # a floor above a day is still capped at a day
])
def test_ari_check_cadence(retry_after, floor, expected) -> None:  # type: ignore[no-untyped-def]
    at = T0 + retry_after if retry_after is not None else None
    assert rules.next_ari_check(T0, at, floor) - T0 == expected


def test_ari_is_asked_when_the_certificate_changed_or_retry_after_passed() -> None:
    due = rules.ari_check_due
    assert due(T0, current_cert_id="a.1", checked_cert_id=None, next_check_at=None)
    assert due(T0, current_cert_id="a.2", checked_cert_id="a.1", next_check_at=T0 + DAY)
    assert not due(T0, current_cert_id="a.1", checked_cert_id="a.1", next_check_at=T0 + MIN)
    assert due(T0 + MIN, current_cert_id="a.1", checked_cert_id="a.1", next_check_at=T0 + MIN)
    assert not due(T0, current_cert_id=None, checked_cert_id=None, next_check_at=None)


def test_replaces_needs_a_shared_name() -> None:
    assert rules.names_overlap("a.example.com,b.example.com", ["b.example.com", "c.example.com"])
    assert not rules.names_overlap("a.example.com", ["c.example.com"])


# -- failures: 1 min, 10 min, 100 min, then daily, with jitter --------------------------------

@pytest.mark.parametrize("failures, base", [
    (1, MIN), (2, 10 * MIN), (3, 100 * MIN), (4, DAY), (5, DAY), (40, DAY),
])
def test_backoff_schedule(failures: int, base: dt.timedelta) -> None:
    assert rules.backoff_delay(failures) == base
    assert rules.backoff_delay(failures, jitter=1.0) == base * 1.1
    assert rules.backoff_delay(failures, jitter=-1.0) == base * 0.9
    assert rules.backoff_delay(failures, jitter=5.0) == base * 1.1  # clamped
    assert rules.next_attempt_time(T0, failures, jitter=0.0) == T0 + base


def test_no_failure_no_wait() -> None:
    assert rules.backoff_delay(0) == dt.timedelta(0)


def test_retry_after_and_rate_limits_are_honoured() -> None:
    # The CA's Retry-After wins when it is later than the backoff step...
    assert rules.next_attempt_time(T0, 1, retry_after=T0 + 3 * HOUR) == T0 + 3 * HOUR
    # ...and the step wins when Retry-After is sooner.
    assert rules.next_attempt_time(T0, 4, retry_after=T0 + HOUR) == T0 + DAY
    # rateLimited without Retry-After: not again within minutes.
    assert rules.next_attempt_time(T0, 1, rate_limited=True) == T0 + rules.RATE_LIMIT_FALLBACK
    assert rules.next_attempt_time(T0, 1, rate_limited=True, retry_after=T0 + 5 * HOUR) == T0 + 5 * HOUR
    assert rules.next_attempt_time(T0, 4, rate_limited=True) == T0 + DAY


def test_in_backoff() -> None:
    assert rules.in_backoff(T0 + MIN, T0)
    assert not rules.in_backoff(T0, T0)
    assert not rules.in_backoff(None, T0)


# -- loud failures in the last tenth of life ---------------------------------------------------

@pytest.mark.parametrize("lifetime", [90 * DAY, 45 * DAY, dt.timedelta(hours=160), dt.timedelta(seconds=30)])
def test_critical_from_the_last_tenth_on(lifetime: dt.timedelta) -> None:
    start, end = T0, T0 + lifetime
    alarm = rules.alarm_time(start, end)
    assert end - alarm == lifetime / 10
    assert not rules.is_critical(start, end, alarm - dt.timedelta(microseconds=1))
    assert rules.is_critical(start, end, alarm)
    assert rules.is_critical(start, end, end + DAY)  # expired


def test_nothing_issued_is_critical() -> None:
    assert rules.is_critical(None, None, T0)


# -- when to look again ------------------------------------------------------------------------

def test_next_check_is_the_earliest_thing_that_can_change() -> None:
    not_due = rules.RenewalDecision(False, "backstop", T0 + 5 * HOUR)
    nxt = rules.next_check_time
    assert nxt(T0, not_due, max_interval=HOUR) == T0 + HOUR
    assert nxt(T0, not_due, max_interval=DAY) == T0 + 5 * HOUR
    assert nxt(T0, not_due, max_interval=DAY, ari_next_check_at=T0 + 2 * HOUR) == T0 + 2 * HOUR
    assert nxt(T0, not_due, max_interval=DAY, pending_retry_at=T0 + 10 * MIN) == T0 + 10 * MIN
    assert nxt(T0, not_due, max_interval=DAY, not_after=T0 + 3 * HOUR) == T0 + 3 * HOUR
    due = rules.RenewalDecision(True, "x", None)
    assert nxt(T0, due, max_interval=DAY, next_attempt_at=T0 + 10 * MIN) == T0 + 10 * MIN
    # Due and not in backoff (a dry run): right away, but never in a tight loop.
    assert nxt(T0, due, max_interval=DAY) == T0 + rules.MIN_RESCHEDULE
    # Moments already past (an expired certificate, an ARI check that failed) do not spin.
    assert nxt(T0, due, max_interval=DAY, next_attempt_at=T0 + DAY, not_after=T0 - DAY,
               ari_next_check_at=T0 - HOUR) == T0 + DAY


# -- the stored material -------------------------------------------------------------------------

def _chain(now: dt.datetime, *, intermediate_days: int = 30):  # type: ignore[no-untyped-def]
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("CA")).issuer_name(name("CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - DAY)
          .not_valid_after(now + intermediate_days * DAY).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("a.example.com")).issuer_name(name("CA"))
            .public_key(leaf_key.public_key()).serial_number(2).not_valid_before(now - DAY)
            .not_valid_after(now + 60 * DAY).sign(ca_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
    return pem(leaf), pem(ca), key_to_pem(leaf_key).decode(), ca_key


def test_stored_material_checks() -> None:
    leaf, ca, key, ca_key = _chain(T0)
    assert rules.stored_material_problem(leaf, ca, key, T0) is None
    other_key = key_to_pem(ec.generate_private_key(ec.SECP256R1())).decode()
    assert rules.stored_material_problem(leaf, ca, other_key, T0) == \
        "the private key does not match the certificate"
    assert rules.stored_material_problem("garbage", ca, key, T0) == "the stored certificate is unreadable"
    assert rules.stored_material_problem(leaf, ca, "garbage", T0) == "the stored private key is unreadable"
    _, foreign_ca, _, _ = _chain(T0)
    problem = rules.stored_material_problem(leaf, foreign_ca, key, T0)
    assert problem is not None and problem.startswith("the chain no longer verifies")
    assert "expired" in (rules.stored_material_problem(leaf, ca, key, T0 + 31 * DAY) or "")


def test_deployed_file_problems() -> None:
    expected = {"/a/fullchain.pem": b"A", "/a/privkey.pem": b"K", "/b/cert.pem": b"C"}
    found = {"/a/fullchain.pem": b"A", "/a/privkey.pem": None, "/b/cert.pem": b"old"}
    assert rules.deployed_file_problems(expected, found) == [
        "/a/privkey.pem is missing", "/b/cert.pem holds other content than the current certificate"]
    unreadable = {**expected, "/a/privkey.pem": PermissionError(13, "Permission denied")}
    assert rules.deployed_file_problems(expected, unreadable) == ["/a/privkey.pem is unreadable (Permission denied)"]
    assert rules.deployed_file_problems(expected, dict(expected)) == []


def test_renew_before_days_is_capped_at_half_the_lifetime() -> None:
    """30 days before expiry of a 6-day certificate would be before it was issued: renewal
    right after every issuance, one order after another."""
    six_days = issued(dt.timedelta(days=6))
    decision = rules.renewal_decision(cfg(renew_before_days=30), six_days, T0 + dt.timedelta(hours=1))
    assert not decision.due and decision.renew_at == T0 + dt.timedelta(days=3)
    late = rules.renewal_decision(cfg(renew_before_days=30), six_days, T0 + dt.timedelta(days=3, hours=1))
    assert late.due and "more than half of this certificate's 6-day lifetime" in late.reason
    # Within half the lifetime the setting is used as written.
    ninety = issued(dt.timedelta(days=90))
    assert rules.renewal_decision(cfg(renew_before_days=30), ninety, T0).renew_at == T0 + dt.timedelta(days=60)
