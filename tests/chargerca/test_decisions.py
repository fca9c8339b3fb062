"""The pure decisions around charger certificates: renewal timing, profile-3 admission, next work."""

from __future__ import annotations

import datetime as dt

import pytest

from certd.chargerca import identity, timing
from certd.chargerca.csr import Standing
from certd.chargerca.plan import Work, plan
from certd.chargerca.records import CertView, RenewalView

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)
LIFE = timing.CertLife("ab", T0, T0 + 300 * DAY, "ca1")  # renew at day 200, alert at day 270


# -- timing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("day,stage", [(0, "fresh"), (199.9, "fresh"), (200, "renew"), (269.9, "renew"),
                                       (270, "last-tenth"), (299.9, "last-tenth"), (300, "expired"),
                                       (400, "expired")])
def test_stage_boundaries(day: float, stage: str) -> None:
    assert timing.stage(LIFE, T0 + day * DAY) == stage


@pytest.mark.parametrize("day,active_ca,reason", [
    (199.9, "ca1", None), (200, "ca1", "two-thirds"), (250, "ca1", "two-thirds"),
    (10, "ca2", "ca-replaced"), (10, None, None), (300, "ca1", "expired"), (300, "ca2", "expired"),
])
def test_renewal_reason_for_a_certificate(day: float, active_ca: str | None, reason: str | None) -> None:
    assert timing.renewal_reason(LIFE, T0 + day * DAY, active_ca=active_ca) == reason


def test_renewal_reason_requested_wins_and_no_certificate_cases() -> None:
    now = T0 + DAY
    assert timing.renewal_reason(LIFE, now, active_ca="ca1", requested=True) == "requested"
    assert timing.renewal_reason(None, now, active_ca="ca1") is None
    assert timing.renewal_reason(None, now, active_ca="ca1", enroll=True) == "enroll"
    assert timing.renewal_reason(None, now, active_ca="ca1", factory_certificate=True) == "factory-certificate"
    assert timing.renewal_reason(None, now, active_ca=None, requested=True) == "requested"


def test_alert_once_per_certificate_in_its_last_tenth() -> None:
    assert not timing.alert_due(LIFE, None, T0 + 269 * DAY)
    assert timing.alert_due(LIFE, None, T0 + 270 * DAY)
    assert timing.alert_due(LIFE, "other", T0 + 301 * DAY)
    assert not timing.alert_due(LIFE, "ab", T0 + 280 * DAY)  # already told about this one
    assert not timing.alert_due(None, None, T0)


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [timing.retry_delay(n, 60, 600).total_seconds() for n in range(0, 7)] == [0, 60, 120, 240, 480,
                                                                                   600, 600]
    assert timing.retry_delay(10_000, 60, 600).total_seconds() == 600
    assert timing.may_try(None, T0) and timing.may_try(T0, T0) and not timing.may_try(T0 + DAY, T0)


def test_zero_length_life_counts_as_over() -> None:
    instant = timing.CertLife("x", T0, T0, "ca1")
    assert timing.fraction_elapsed(instant, T0) == 1.0 and timing.stage(instant, T0) == "expired"


# -- profile-3 admission -----------------------------------------------------------------------

def peer(cn: str | None = "CP-1", by_certd: bool = True, not_after: dt.datetime = T0 + 10 * DAY):  # type: ignore[no-untyped-def]
    return identity.PeerCertificate(cn, "abc", "f" * 64, not_after, by_certd)


def stored(state: str = "active", charger_id: str = "CP-1") -> identity.StoredCertificate:
    return identity.StoredCertificate(charger_id, state, T0 + 10 * DAY)


OK = Standing(True, True)


@pytest.mark.parametrize("state,first_use", [("active", False), ("superseded", False), ("issued", True)])
def test_certd_certificates_in_usable_states_admit(state: str, first_use: bool) -> None:
    verdict = identity.decide("CP-1", peer(), stored(state), OK, "reject", T0)
    assert verdict == identity.Admit("certd", first_use)


@pytest.mark.parametrize("args,reason", [
    (("CP-1", None, None, OK), "no client certificate"),
    (("CP-1", peer("CP-2"), stored(), OK), "the certificate names 'CP-2', not the charger of the path"),
    (("CP-1", peer(None), stored(), OK), "the certificate names no CN, not the charger of the path"),
    (("CP-1", peer(), None, OK), "certificate serial abc is not one certd issued"),
    (("CP-1", peer(), stored(charger_id="CP-9"), OK), "certificate serial abc was issued to another charger"),
    (("CP-1", peer(), stored("revoked"), OK), "certificate serial abc is revoked"),
    (("CP-1", peer(), stored("rejected"), OK), "certificate serial abc is rejected"),
    (("CP-1", peer(), stored(), None), "the charger was removed from the registry"),
    (("CP-1", peer(), stored(), Standing(False, True)), "charger disabled"),
    (("CP-1", peer(not_after=T0), stored(), OK), "the certificate expired"),
    (("CP-1", peer(by_certd=False), None, Standing(False, True)), "charger disabled"),
    (("10.0.0.1", peer("10.0.0.1"), stored(charger_id="10.0.0.1"), OK), "the certificate CN looks like an address"),
])
def test_refusals(args, reason: str) -> None:  # type: ignore[no-untyped-def]
    assert identity.decide(*args, "reject", T0) == identity.Refuse(reason)


@pytest.mark.parametrize("policy,verdict", [("reject", identity.Refuse("unknown charger")),
                                            ("register", identity.Register("pending")),
                                            ("accept", identity.Register("accepted"))])
def test_manufacturer_certificate_of_an_unknown_charger_follows_the_policy(policy: str, verdict) -> None:  # type: ignore[no-untyped-def]
    assert identity.decide("CP-1", peer(by_certd=False), None, None, policy, T0) == verdict


def test_manufacturer_certificate_of_a_known_charger_admits() -> None:
    assert identity.decide("CP-1", peer(by_certd=False), None, Standing(True, False), "reject", T0) == \
        identity.Admit("manufacturer", False)


# -- what to do next with a connected charger --------------------------------------------------

def cert(serial: str, state: str, delivery: str = "accepted", ca: str = "ca1", days: float = 300,
         start: dt.datetime = T0, next_delivery_at: dt.datetime | None = None) -> CertView:
    return CertView("CP-1", serial, serial * 4, ca, "ec-p256", state, "csr", delivery, 0, next_delivery_at,
                    None, start, start + days * DAY, start, None, None, "")


def renewal(requested: bool = False, next_at: dt.datetime | None = None, move: bool = False) -> RenewalView:
    return RenewalView("CP-1", T0 if requested else None, 0, next_at, None, None, move)


def decide(certs: list[CertView], ren: RenewalView | None = None, day: float = 1, **kw):  # type: ignore[no-untyped-def]
    options = {"active_ca": "ca1", "enroll": False, "factory_certificate": False, "move_possible": False}
    options.update(kw)
    return plan("CP-1", certs, ren, T0 + day * DAY, **options)


def test_nothing_to_do_for_a_fresh_certificate() -> None:
    assert decide([cert("01", "active")]) is None


def test_trigger_at_two_thirds_and_when_the_ca_changed() -> None:
    assert decide([cert("01", "active")], day=200) == Work("CP-1", "trigger", "two-thirds")
    assert decide([cert("01", "active")], active_ca="ca2") == Work("CP-1", "trigger", "ca-replaced")


def test_back_off_holds_the_trigger() -> None:
    assert decide([cert("01", "active")], renewal(next_at=T0 + 300 * DAY), day=200) is None
    assert decide([cert("01", "active")], renewal(next_at=T0 + 100 * DAY), day=200) == \
        Work("CP-1", "trigger", "two-thirds")


def test_pending_delivery_comes_first_and_blocks_triggers() -> None:
    waiting = cert("02", "issued", delivery="pending")
    assert decide([cert("01", "active"), waiting], renewal(requested=True), day=250) == \
        Work("CP-1", "deliver", "certificate not yet delivered", "02")
    later = cert("02", "issued", delivery="pending", next_delivery_at=T0 + 260 * DAY)
    assert decide([cert("01", "active"), later], renewal(requested=True), day=250) is None


def test_move_after_acceptance_only_where_possible() -> None:
    assert decide([cert("01", "active")], renewal(move=True), move_possible=True) == \
        Work("CP-1", "move", "certificate accepted over security profile 2")
    assert decide([cert("01", "active")], renewal(move=True), move_possible=False) is None
    assert decide([cert("01", "active")], renewal(move=True, next_at=T0 + 5 * DAY), move_possible=True) is None


def test_enrollment_requests_and_factory_certificates() -> None:
    assert decide([]) is None
    assert decide([], enroll=True) == Work("CP-1", "trigger", "enroll")
    assert decide([], factory_certificate=True) == Work("CP-1", "trigger", "factory-certificate")
    assert decide([], renewal(requested=True)) == Work("CP-1", "trigger", "requested")
    # Revoked and rejected certificates are no current certificate.
    assert decide([cert("01", "revoked"), cert("02", "rejected", "rejected")], enroll=True) == \
        Work("CP-1", "trigger", "enroll")
    # A superseded certificate alone does not count as current either.
    assert decide([cert("01", "superseded")], enroll=False) is None
