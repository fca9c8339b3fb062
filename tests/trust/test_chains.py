"""Path building and roles: pure, against hierarchies made with `cryptography`."""

from __future__ import annotations

import pytest

from certd.trust import UnanchoredChainError
from certd.trust.certs import from_x509, parse_pem_bundle
from certd.trust.chains import CROSS_SIGN, INTERMEDIATE, ROOT, AnchorSet, build_path
from tests import pki


def anchors(*roots: pki.Ca, name: str = "test") -> AnchorSet:
    return AnchorSet(name, "test roots", tuple(from_x509(r.cert) for r in roots))


def cas(*items: pki.Ca):
    return [from_x509(c.cert) for c in items]


def roles(path) -> list[tuple[str, str, bool, bool]]:
    return [(l.cert.common_name, l.role, l.served, l.in_path) for l in path.links]


def test_single_intermediate_ends_at_anchor_not_served() -> None:
    root = pki.root("Root A")
    inter = pki.intermediate("Inter A1", root)
    leaf = pki.leaf(["a.example.com"], inter)
    path = build_path(leaf.cert, cas(inter), anchors(root))
    assert roles(path) == [("Inter A1", INTERMEDIATE, True, True), ("Root A", ROOT, False, True)]
    assert path.anchor.common_name == "Root A"


def test_two_intermediates_in_order() -> None:
    root = pki.root("Root B")
    upper = pki.intermediate("Inter B upper", root)
    lower = pki.intermediate("Inter B lower", upper)
    leaf = pki.leaf(["b.example.com"], lower)
    # served out of order: the path still follows signatures
    path = build_path(leaf.cert, cas(upper, lower), anchors(root))
    assert [l.cert.common_name for l in path.links] == ["Inter B lower", "Inter B upper", "Root B"]
    assert [l.role for l in path.links] == [INTERMEDIATE, INTERMEDIATE, ROOT]


def test_lets_encrypt_2026_shape_cross_signed_root() -> None:
    """leaf <- YR1 <- Root YR (signed by ISRG Root X1) <- ISRG Root X1 (anchor)."""
    x1 = pki.root("ISRG Root X1")
    yr = pki.root("Root YR")
    yr_cross = pki.cross_sign(yr, x1)
    yr1 = pki.intermediate("YR1", yr)
    leaf = pki.leaf(["ocpp.example.com"], yr1)
    path = build_path(leaf.cert, cas(yr1, yr_cross), anchors(x1))
    assert roles(path) == [
        ("YR1", INTERMEDIATE, True, True),
        ("Root YR", CROSS_SIGN, True, True),
        ("ISRG Root X1", ROOT, False, True),
    ]


def test_cross_sign_recognised_by_twin_without_root_in_name() -> None:
    old = pki.root("Old Anchor CA")
    new = pki.root("Fresh CA")
    fresh_by_old = pki.cross_sign(new, old)
    inter = pki.intermediate("Issuing 7", new)
    leaf = pki.leaf(["c.example.com"], inter)
    # the self-signed twin is in the anchor set: served path still goes via the cross-sign
    path = build_path(leaf.cert, cas(inter, fresh_by_old), anchors(old, new))
    assert [l.role for l in path.links] == [INTERMEDIATE, CROSS_SIGN, ROOT]
    assert path.anchor.common_name == "Old Anchor CA"
    # without the twin anywhere and no "Root" in the name it is an intermediate
    path = build_path(leaf.cert, cas(inter, fresh_by_old), anchors(old))
    assert [l.role for l in path.links] == [INTERMEDIATE, INTERMEDIATE, ROOT]


def test_served_self_signed_root_that_is_an_anchor() -> None:
    root = pki.root("Root S")
    inter = pki.intermediate("Inter S", root)
    leaf = pki.leaf(["s.example.com"], inter)
    path = build_path(leaf.cert, cas(inter, root), anchors(root))
    assert roles(path) == [("Inter S", INTERMEDIATE, True, True), ("Root S", ROOT, True, True)]


def test_served_self_signed_root_not_in_anchors_is_an_error() -> None:
    root = pki.root("Rogue Root")
    inter = pki.intermediate("Rogue Inter", root)
    leaf = pki.leaf(["r.example.com"], inter)
    with pytest.raises(UnanchoredChainError, match="self-signed.*Rogue Root.*not in anchor set 'test'"):
        build_path(leaf.cert, cas(inter, root), anchors(pki.root("Other Root")))


def test_missing_intermediate_is_an_error_naming_the_gap() -> None:
    root = pki.root("Root M")
    inter = pki.intermediate("Inter M", root)
    leaf = pki.leaf(["m.example.com"], inter)
    with pytest.raises(UnanchoredChainError) as info:
        build_path(leaf.cert, [], anchors(root), what="the chain of web")
    message = str(info.value)
    assert "the chain of web reaches no trust anchor" in message
    assert "CN=Inter M" in message and "anchor set 'test'" in message


def test_same_name_different_key_does_not_count_as_signer() -> None:
    real = pki.root("Root Same")
    impostor = pki.root("Root Same")  # same subject, other key
    inter = pki.intermediate("Inter Same", real)
    leaf = pki.leaf(["i.example.com"], inter)
    with pytest.raises(UnanchoredChainError):
        build_path(leaf.cert, cas(inter), anchors(impostor))
    assert build_path(leaf.cert, cas(inter), anchors(impostor, real)).anchor.fingerprint == from_x509(real.cert).fingerprint


def test_leaf_signed_directly_by_anchor() -> None:
    root = pki.root("Root D")
    leaf = pki.leaf(["d.example.com"], root)
    path = build_path(leaf.cert, [], anchors(root))
    assert roles(path) == [("Root D", ROOT, False, True)]


def test_extra_served_certificate_is_kept_off_path() -> None:
    root = pki.root("Root E")
    inter = pki.intermediate("Inter E", root)
    unrelated = pki.intermediate("Unrelated E", root)
    leaf = pki.leaf(["e.example.com"], inter)
    path = build_path(leaf.cert, cas(inter, unrelated), anchors(root))
    assert roles(path)[-1] == ("Unrelated E", INTERMEDIATE, True, False)


def test_loop_is_bounded() -> None:
    a = pki.root("Loop A")
    b_key = pki.ec_key()
    b = pki.intermediate("Loop B", a, key=b_key)
    a_by_b = pki.cross_sign(a, b)  # A signed by B, B signed by A
    leaf = pki.leaf(["l.example.com"], b)
    with pytest.raises(UnanchoredChainError):
        build_path(leaf.cert, cas(b, a_by_b), anchors(pki.root("Elsewhere")))


def test_parse_pem_bundle_rejects_garbage_and_names_source() -> None:
    from certd.trust import TrustError

    assert parse_pem_bundle("no certificates here", "x") == []
    with pytest.raises(TrustError, match="bundle.pem: not a valid PEM"):
        parse_pem_bundle("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "bundle.pem")
