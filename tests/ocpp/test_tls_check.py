"""Check-before-serve: every defect named, good material passes, the holder swaps atomically."""

import datetime as dt

import pytest

from certd.store.types import utcnow
from certd.serve.tls import (
    ContextHolder,
    KeyPairPem,
    TlsMaterialError,
    check_material,
    load_trust_anchors,
    name_covers,
    prepare,
)
from tests.pki import MiniCA, new_key

HOST = "ocpp.example.test"


@pytest.fixture(scope="module")
def anchors(ca: MiniCA, ca_file):  # type: ignore[no-untyped-def]
    return load_trust_anchors([ca_file])


def _pair(leaf, **changes) -> KeyPairPem:  # type: ignore[no-untyped-def]
    values = dict(source="test", cert_pem=leaf.cert_pem, chain_pem=leaf.chain_pem, key_pem=leaf.key_pem)
    values.update(changes)
    return KeyPairPem(**values)


def _problems(pairs, anchors, profile="modern", host=HOST, now=None):  # type: ignore[no-untyped-def]
    problems, _ = check_material(pairs, host, profile, now or utcnow(), anchors)
    return problems


def test_good_rsa_and_ec_pair_pass(ca: MiniCA, anchors) -> None:  # type: ignore[no-untyped-def]
    rsa_leaf, ec_leaf = ca.issue([HOST], "rsa"), ca.issue([HOST], "ec")
    problems, served = check_material([_pair(rsa_leaf), _pair(ec_leaf)], HOST, "modern", utcnow(), anchors)
    assert problems == []
    assert [s.key_type for s in served] == ["rsa", "ec"]
    assert served[0].serial == rsa_leaf.serial and served[0].subject_cn == HOST


def test_key_mismatch(ca: MiniCA, anchors) -> None:  # type: ignore[no-untyped-def]
    other = ca.issue([HOST], "ec")
    problems = _problems([_pair(ca.issue([HOST], "ec"), key_pem=other.key_pem)], anchors)
    assert problems == ["test: the private key does not match the certificate"]


def test_expired_and_not_yet_valid(ca: MiniCA, anchors) -> None:  # type: ignore[no-untyped-def]
    old = ca.issue([HOST], "ec", days=1, not_before=utcnow() - dt.timedelta(days=3))
    assert any("expired on" in p for p in _problems([_pair(old)], anchors))
    future = ca.issue([HOST], "ec", not_before=utcnow() + dt.timedelta(days=1))
    assert any("not valid before" in p for p in _problems([_pair(future)], anchors))


def test_names_must_cover_listener_host(ca: MiniCA, anchors) -> None:  # type: ignore[no-untyped-def]
    leaf = ca.issue(["other.example.test"], "ec")
    assert _problems([_pair(leaf)], anchors) == [
        f"test: its names (other.example.test) do not cover the listener host {HOST}"
    ]
    wildcard = ca.issue(["*.example.test"], "ec")
    assert _problems([_pair(wildcard)], anchors) == []


def test_chain_incomplete_when_only_the_leaf_is_served(ca: MiniCA, anchors) -> None:  # type: ignore[no-untyped-def]
    problems = _problems([_pair(ca.issue([HOST], "ec"), chain_pem="")], anchors)
    assert len(problems) == 1 and "chain incomplete" in problems[0]


def test_chain_with_unknown_root_is_incomplete(ca: MiniCA) -> None:
    public_only = load_trust_anchors([])  # certifi roots, not the test CA
    problems = _problems([_pair(ca.issue([HOST], "ec"))], public_only)
    assert len(problems) == 1 and "chain incomplete" in problems[0] and "trust_roots" in problems[0]


def test_chain_with_root_included_needs_no_anchor(ca: MiniCA) -> None:
    leaf = ca.issue([HOST], "ec")
    assert _problems([_pair(leaf, chain_pem=leaf.chain_pem + ca.root_pem)], []) == []


def test_foreign_chain(ca: MiniCA, anchors) -> None:  # type: ignore[no-untyped-def]
    other_ca = MiniCA("other")
    problems = _problems([_pair(ca.issue([HOST], "ec"), chain_pem=other_ca.intermediate_pem)], anchors)
    assert len(problems) == 1 and "not issued by" in problems[0]


def test_garbage_is_named_without_leaking_the_key(ca: MiniCA, anchors) -> None:  # type: ignore[no-untyped-def]
    leaf = ca.issue([HOST], "ec")
    assert _problems([_pair(leaf, cert_pem="junk")], anchors) == [
        "test: the certificate PEM cannot be parsed"]
    broken_key = leaf.key_pem.replace("A", "B", 5)
    problems = _problems([_pair(leaf, key_pem=broken_key)], anchors)
    assert problems and "private key" in problems[0]
    assert broken_key not in problems[0] and "PRIVATE KEY" not in problems[0]


def test_one_certificate_per_key_type(ca: MiniCA, anchors) -> None:  # type: ignore[no-untyped-def]
    problems = _problems([_pair(ca.issue([HOST], "ec")), _pair(ca.issue([HOST], "ec"))], anchors)
    assert problems == ["two EC certificates on one listener: a TLS context holds one certificate per key type"]


def test_gsm_profile_needs_rsa(ca: MiniCA, anchors) -> None:  # type: ignore[no-untyped-def]
    problems = _problems([_pair(ca.issue([HOST], "ec"))], anchors, profile="gsm")
    assert problems == ["the gsm profile's ciphers all need an RSA certificate; none is served"]


def test_prepare_raises_with_every_problem_and_holder_keeps_the_old(ca: MiniCA, anchors) -> None:  # type: ignore[no-untyped-def]
    holder = ContextHolder("modern")
    good = prepare([_pair(ca.issue([HOST], "ec"))], HOST, "modern", utcnow(), anchors)
    assert holder.swap(good) is None and holder.current is good
    bad = ca.issue(["nope.example.test"], "ec", key=new_key("ec"))
    with pytest.raises(TlsMaterialError, match="do not cover the listener host.*chain incomplete"):
        prepare([_pair(bad, chain_pem="")], HOST, "modern", utcnow(), anchors)
    assert holder.current is good


@pytest.mark.parametrize("pattern, host, expected", [
    ("a.example.com", "A.example.com.", True),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "a.b.example.com", False),
    ("example.com", "a.example.com", False),
])
def test_name_covers(pattern: str, host: str, expected: bool) -> None:
    assert name_covers(pattern, host) is expected
