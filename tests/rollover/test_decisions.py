"""Pure rollover decisions: new issuances, install plans, the gate, the served choice, status buckets."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from certd.rollover import gates as rules
from certd.trust.certs import from_x509
from certd.rollover.gates import ChargerView, Identity, identity_of
from tests import pki

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone.utc)

ROOT_A = pki.root("Root A")
ROOT_B = pki.root("Root B")
ROOT_C = pki.root("Root C")
B_BY_A = pki.cross_sign(ROOT_B, ROOT_A)
A, B, C, BX = (from_x509(x.cert) for x in (ROOT_A, ROOT_B, ROOT_C, B_BY_A))
IA, IB, IC = identity_of(A), identity_of(B), identity_of(C)


# -- identities ------------------------------------------------------------------------------

def test_cross_signed_form_is_the_same_identity() -> None:
    assert identity_of(BX) == IB and BX.fingerprint != B.fingerprint
    assert identity_of(A) != IB
    assert Identity.from_json(IB.to_json()) == IB


# -- on_new_issuance --------------------------------------------------------------------------

@pytest.mark.parametrize("pending, served, action", [
    (frozenset({IA}), frozenset({IA}), "release"),          # renewal from the same root
    (frozenset({IB}), frozenset({IA}), "hold"),             # new root
    (frozenset({IA, IB}), frozenset({IA}), "hold"),         # one more root
    (frozenset({IA}), frozenset({IA, IB}), "release"),      # fewer roots
    (frozenset({IB}), None, "hold"),                        # served roots unknown: all count as new
    (None, frozenset({IA}), "block"),                       # new chain unresolvable
])
def test_new_issuance(pending, served, action) -> None:
    not_after = NOW + dt.timedelta(days=30)
    decision = rules.on_new_issuance(served_id=1, served_not_after=not_after, pending_roots=pending,
                                     served_roots=served, deadline_days=7, now=NOW, unresolved="why")
    assert decision.action == action
    if action == "hold":
        assert decision.required == pending - (served or frozenset())
        assert decision.deadline_at == not_after - dt.timedelta(days=7)
        assert "Root B" in decision.reason
    if action == "block":
        assert decision.deadline_at == not_after - dt.timedelta(days=7) and "why" in decision.reason


def test_new_issuance_with_nothing_served_or_an_expired_one_releases() -> None:
    for served_id, not_after in ((None, None), (1, NOW - dt.timedelta(seconds=1)), (1, NOW)):
        decision = rules.on_new_issuance(served_id=served_id, served_not_after=not_after,
                                         pending_roots=frozenset({IB}), served_roots=frozenset({IA}),
                                         deadline_days=7, now=NOW)
        assert decision.action == "release"


# -- plan_installs ----------------------------------------------------------------------------

def test_plan_sends_what_is_lacking_priority_first() -> None:
    plan = rules.plan_installs([A, B, C], held=[A], known=[A, B, C, BX], priority=frozenset({IC}))
    assert [c.subject for c in plan.send] == [C.subject, B.subject]
    assert plan.problems == () and set(plan.lacking) == {IB, IC}


def test_plan_sends_nothing_to_a_charger_holding_everything_in_any_form() -> None:
    assert rules.plan_installs([A, B], held=[A, BX], known=[A, B, BX]).send == ()
    assert rules.plan_installs([A, A], held=[], known=[A]).send == (A,)  # duplicates once


def test_additional_root_check_sends_the_cross_signed_form() -> None:
    plan = rules.plan_installs([B], held=[A], known=[A, B, BX], priority=frozenset({IB}),
                               additional_root_check=True)
    assert plan.send == (BX,)


def test_additional_root_check_without_a_cross_sign_is_reported_not_sent() -> None:
    plan = rules.plan_installs([C], held=[A], known=[A, B, C, BX], additional_root_check=True)
    assert plan.send == ()
    [problem] = plan.problems
    assert problem.code == "needs-cross-sign" and problem.identity == IC
    assert "AdditionalRootCertificateCheck" in problem.reason and "Root A" in problem.reason


def test_cross_sign_by_a_root_the_charger_does_not_hold_does_not_count() -> None:
    plan = rules.plan_installs([B], held=[C], known=[A, B, C, BX], additional_root_check=True)
    assert plan.send == () and plan.problems[0].code == "needs-cross-sign"


@pytest.mark.parametrize("store_max, used, sent", [
    (None, 0, 2), (10, 1, 2), (3, 1, 2), (2, 1, 1), (1, 1, 0), (0, 0, 0), (2, 5, 0),
])
def test_store_limit(store_max, used, sent) -> None:
    plan = rules.plan_installs([A, B, C], held=[A], known=[A, B, C], priority=frozenset({IC}),
                               store_max=store_max, store_used=used)
    assert len(plan.send) == sent
    assert [p.code for p in plan.problems] == ["store-full"] * (2 - sent)
    if sent == 1:
        assert plan.send == (C,)  # the root the listener needs goes first
    if plan.problems:
        assert f"at most {store_max}" in plan.problems[0].reason


def test_store_used_defaults_to_what_it_holds() -> None:
    plan = rules.plan_installs([A, B], held=[A], known=[A, B], store_max=1)
    assert plan.send == () and plan.problems[0].code == "store-full"


def test_too_large_pem_is_reported() -> None:
    big = pki.root("R" * 10, key=pki.rsa_key())
    cert = from_x509(big.cert)
    object.__setattr__(cert, "pem", cert.pem + "x" * rules.MAX_PEM_CHARS)  # frozen dataclass
    plan = rules.plan_installs([cert], held=[], known=[cert])
    assert plan.send == () and plan.problems[0].code == "too-large"


def test_target_for_additional_root_check_is_only_the_priority_roots() -> None:
    assert rules.target_for([A, B, C], frozenset({IB}), True) == [B]
    assert rules.target_for([A, B, C], frozenset({IB}), False) == [A, B, C]
    assert rules.target_for([A, B, C], frozenset({IB}), None) == [A, B, C]


def test_a_confirmed_charger_is_current_only_while_it_holds_the_needed_priority_roots() -> None:
    # The priority root B is in bundle version 1; a root outside the bundle (C) cannot be sent,
    # so it is not needed.
    needed = rules.needed_roots([A, B], frozenset({IB, IC}))
    assert needed == frozenset({IB})
    # Same bundle version, but it reported holding only A: the priority moved to B.
    assert not rules.plan_covered({"fleet": 1}, frozenset({IA}), {"fleet": 1}, needed)
    assert rules.plan_covered({"fleet": 1}, frozenset({IA, IB}), {"fleet": 1}, needed)
    assert not rules.plan_covered({"fleet": 1}, frozenset({IA, IB}), {"fleet": 2}, needed)
    assert rules.plan_covered({"fleet": 1}, frozenset(), {"fleet": 1}, frozenset())


# -- the gate ---------------------------------------------------------------------------------

def views(holding: int, lacking: int, disabled: int = 0) -> list[ChargerView]:
    result = [ChargerView(f"H{i}", held=frozenset({IA, IB}), online=True, state="confirmed")
              for i in range(holding)]
    result += [ChargerView(f"L{i}", held=frozenset({IA}), online=i % 2 == 0, state="pending")
               for i in range(lacking)]
    result += [ChargerView(f"D{i}", enabled=False) for i in range(disabled)]
    return result


@pytest.mark.parametrize("share, holding, lacking, switch", [
    (1.0, 20, 0, True), (1.0, 19, 1, False), (0.95, 19, 1, True), (0.9, 17, 3, False),
    (0.5, 1, 1, True), (0.5, 1, 2, False), (0.0, 0, 5, True), (1.0, 0, 0, True),
])
def test_gate_share(share, holding, lacking, switch) -> None:
    decision = rules.decide_gate(frozenset({IB}), views(holding, lacking, disabled=3), gate_share=share,
                                 deadline_at=NOW + dt.timedelta(days=1), now=NOW)
    assert decision.switch is switch and not decision.forced
    assert decision.total == holding + lacking  # disabled chargers do not count
    assert len(decision.confirmed) == holding and len(decision.lacking) == lacking
    assert f"{holding}/{holding + lacking}" in decision.reason


def test_gate_deadline_forces_and_lists_the_lacking() -> None:
    chargers = views(3, 2)
    before = rules.decide_gate(frozenset({IB}), chargers, gate_share=1.0,
                               deadline_at=NOW + dt.timedelta(seconds=1), now=NOW)
    assert not before.switch
    at = rules.decide_gate(frozenset({IB}), chargers, gate_share=1.0, deadline_at=NOW, now=NOW)
    assert at.switch and at.forced and "deadline" in at.reason
    assert [item.charger_id for item in at.lacking] == ["L0", "L1"]


def test_gate_needs_every_required_root() -> None:
    chargers = [ChargerView("X", held=frozenset({IB})), ChargerView("Y", held=frozenset({IB, IC}))]
    decision = rules.decide_gate(frozenset({IB, IC}), chargers, gate_share=1.0, deadline_at=None, now=NOW)
    assert decision.confirmed == ("Y",) and not decision.switch


def test_blocked_gate_opens_only_at_the_deadline() -> None:
    chargers = views(2, 0)
    assert not rules.blocked_gate("unknown", chargers, deadline_at=NOW + dt.timedelta(hours=1), now=NOW).switch
    forced = rules.blocked_gate("unknown", chargers, deadline_at=NOW, now=NOW)
    assert forced.switch and forced.forced and len(forced.lacking) == 2


@pytest.mark.parametrize("total, share, needed", [
    (20, 1.0, 20), (20, 0.95, 19), (20, 0.951, 20), (3, 0.5, 2), (0, 1.0, 0), (7, 0.0, 0), (10, 0.3, 3),
])
def test_needed_count(total, share, needed) -> None:
    assert rules.needed_count(total, share) == needed


def test_lacking_reasons() -> None:
    failed = ChargerView("F", online=True, state="failed", last_result="Rejected", last_reason="nope", gsm=True)
    assert rules.lacking_reason(failed, "fleet") == (
        "Rejected: nope; a GSM module can be given the roots by AT commands: "
        "certd bundle export fleet --format quectel")
    assert rules.lacking_reason(ChargerView("O")) == "offline (never connected)"
    seen = ChargerView("S", last_seen=NOW)
    assert rules.lacking_reason(seen) == "offline (last seen 2026-06-01 12:00 UTC)"
    assert rules.lacking_reason(ChargerView("P", online=True, state="pending")) == "not confirmed yet"
    timeout = ChargerView("T", online=True, state="pending", last_result="timeout", last_reason="slow")
    assert rules.lacking_reason(timeout) == "timeout: slow"
    assert "quectel" not in rules.lacking_reason(ChargerView("N", online=True), "fleet")


# -- served_choice ------------------------------------------------------------------------------

def test_served_choice_all_cases() -> None:
    valid = NOW + dt.timedelta(days=30)
    base = dict(current_id=2, served_id=1, served_not_after=valid, decided_id=2,
                deadline_at=NOW + dt.timedelta(days=23), deadline_days=7.0, now=NOW)
    assert rules.served_choice(**base) == 1                                        # gate holds
    assert rules.served_choice(**{**base, "deadline_at": NOW}) == 2                # deadline passed
    assert rules.served_choice(**{**base, "served_not_after": NOW}) == 2           # previous expired
    assert rules.served_choice(**{**base, "served_id": None}) == 2                 # nothing gated
    assert rules.served_choice(**{**base, "served_id": 2}) == 2                    # switched
    assert rules.served_choice(**{**base, "current_id": None}) is None             # nothing issued
    # A newer issuance the engine has not looked at yet is held back, within the same limits.
    undecided = {**base, "current_id": 3, "deadline_at": None}
    assert rules.served_choice(**undecided) == 1
    assert rules.served_choice(**{**undecided, "served_not_after": NOW + dt.timedelta(days=7)}) == 3
    assert rules.served_choice(**{**undecided, "deadline_days": 0}) == 1


def test_bucket_is_exactly_one_per_charger() -> None:
    states = [None, "confirmed", "pending", "failed"]
    for state, online in itertools.product(states, (True, False)):
        kind = rules.bucket(ChargerView("X", state=state, online=online))
        expected = {"confirmed": "confirmed", "failed": "failed"}.get(state or "", "pending" if online else "offline")
        assert kind == expected
