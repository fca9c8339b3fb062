"""Bundle content, versions and diffs: pure functions, exhaustive cases."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from certd.trust.bundles import (
    BundleDiff, CertSummary, IssuanceChains, compute_content, decide_version, diff_summaries,
    manifest, select_issuances,
)
from certd.trust.certs import from_x509
from certd.trust.chains import AnchorSet, build_path
from tests import pki

NOW = pki.NOW


def issuance(iid: int, name: str, leaf: pki.Ca, served: list[pki.Ca], anchors: list[pki.Ca], *,
             age_days: float = 0, alternates: list[list[pki.Ca]] | None = None,
             domains: tuple[str, ...] | None = None) -> IssuanceChains:
    aset = AnchorSet("t", "test", tuple(from_x509(a.cert) for a in anchors))
    pool = [from_x509(c.cert) for chain in [served, *(alternates or [])] for c in chain]
    chains = [build_path(leaf.cert, [from_x509(c.cert) for c in served], aset, pool).links]
    for alt in alternates or []:
        chains.append(build_path(leaf.cert, [from_x509(c.cert) for c in alt], aset, pool).links)
    return IssuanceChains(iid, name, domains or (f"{name}.example.com",),
                          NOW - dt.timedelta(days=age_days), leaf.cert.not_valid_after_utc, tuple(chains))


@pytest.fixture(scope="module")
def hierarchy():
    root_a = pki.root("Root A")
    root_b = pki.root("Root B")
    inter_a = pki.intermediate("Inter A", root_a)
    inter_b = pki.intermediate("Inter B", root_b)
    return root_a, root_b, inter_a, inter_b


def cns(content) -> list[str]:
    return sorted(e.cert.common_name for e in content.entries)


def test_roots_and_full_flavours(hierarchy) -> None:
    root_a, _, inter_a, _ = hierarchy
    leaf = pki.leaf(["web.example.com"], inter_a)
    items = [issuance(1, "web", leaf, [inter_a], [root_a])]
    assert cns(compute_content(items, "roots", NOW, 90)) == ["Root A"]
    assert cns(compute_content(items, "full", NOW, 90)) == ["Inter A", "Root A"]


def test_alternates_contribute_their_root_and_intermediates(hierarchy) -> None:
    root_a, root_b, inter_a, _ = hierarchy
    # same intermediate key cross-signed by root B: an alternate chain
    inter_a_by_b = pki.cross_sign(inter_a, root_b)
    leaf = pki.leaf(["web.example.com"], inter_a)
    items = [issuance(1, "web", leaf, [inter_a], [root_a, root_b], alternates=[[inter_a_by_b]])]
    roots = compute_content(items, "roots", NOW, 90)
    full = compute_content(items, "full", NOW, 90)
    assert cns(roots) == ["Root A", "Root B"]
    assert len(full.entries) == 4
    roles = {e.cert.issuer: e.role for e in full.entries if e.cert.common_name == "Inter A"}
    assert set(roles.values()) == {"cross-sign"}  # same key under two issuers


def test_deduplicated_and_sorted_by_fingerprint(hierarchy) -> None:
    root_a, _, inter_a, _ = hierarchy
    items = [issuance(i, n, pki.leaf([f"{n}.example.com"], inter_a), [inter_a], [root_a])
             for i, n in [(1, "web"), (2, "ocpp"), (3, "mqtt")]]
    full = compute_content(items, "full", NOW, 90)
    fps = [e.cert.fingerprint for e in full.entries]
    assert fps == sorted(fps) and len(fps) == 2
    assert full.server_names == ("mqtt.example.com", "ocpp.example.com", "web.example.com")
    assert all(e.server_names == full.server_names for e in full.entries)


def test_hash_is_sha256_of_the_concatenated_canonical_pem(hierarchy) -> None:
    root_a, _, inter_a, _ = hierarchy
    items = [issuance(1, "web", pki.leaf(["web.example.com"], inter_a), [inter_a], [root_a])]
    full = compute_content(items, "full", NOW, 90)
    assert full.sha256 == hashlib.sha256(full.pem.encode()).hexdigest()
    assert full.pem.count("BEGIN CERTIFICATE") == 2 and full.pem.endswith("-----END CERTIFICATE-----\n")
    # order of issuances and chains never changes the content
    twice = compute_content(list(reversed(items * 2)), "full", NOW, 90)
    assert twice.sha256 == full.sha256


def test_recent_window_keeps_previous_chain_then_forgets_it(hierarchy) -> None:
    root_a, root_b, inter_a, inter_b = hierarchy
    old = issuance(1, "web", pki.leaf(["web.example.com"], inter_a), [inter_a], [root_a, root_b], age_days=30)
    new = issuance(2, "web", pki.leaf(["web.example.com"], inter_b), [inter_b], [root_a, root_b])
    assert cns(compute_content([old, new], "roots", NOW, 90)) == ["Root A", "Root B"]
    assert cns(compute_content([old, new], "roots", NOW, 10)) == ["Root B"]


def test_latest_issuance_is_kept_even_when_old_or_expired_leaf(hierarchy) -> None:
    root_a, _, inter_a, _ = hierarchy
    expired_leaf = pki.leaf(["web.example.com"], inter_a, not_after=NOW - dt.timedelta(days=1))
    only = issuance(1, "web", expired_leaf, [inter_a], [root_a], age_days=400)
    assert [i.issued_id for i in select_issuances([only], NOW, 90)] == [1]
    # an older issuance with an expired leaf is dropped even inside the window
    newer = issuance(2, "web", pki.leaf(["web.example.com"], inter_a), [inter_a], [root_a], age_days=1)
    old = issuance(3, "web", expired_leaf, [inter_a], [root_a], age_days=5)
    assert [i.issued_id for i in select_issuances([old, newer], NOW, 90)] == [2]


def test_expired_ca_dropped_with_note(hierarchy) -> None:
    root_a, _, _, _ = hierarchy
    dying = pki.intermediate("Dying Inter", root_a, not_after=NOW + dt.timedelta(days=2))
    item = issuance(1, "web", pki.leaf(["web.example.com"], dying), [dying], [root_a])
    later = NOW + dt.timedelta(days=3)
    content = compute_content([item], "full", later, 90)
    assert cns(content) == ["Root A"]
    assert len(content.notes) == 1
    assert "dropped expired intermediate" in content.notes[0] and "Dying Inter" in content.notes[0]


def test_decide_version_changes_exactly_when_content_changes(hierarchy) -> None:
    root_a, root_b, inter_a, inter_b = hierarchy
    first = compute_content([issuance(1, "w", pki.leaf(["w.example.com"], inter_a), [inter_a], [root_a])],
                            "full", NOW, 90)
    d1 = decide_version(None, None, [], first)
    assert d1.changed and d1.seq == 1 and d1.sha256 == first.sha256
    assert {s.subject for s in d1.diff.added} == {e.cert.subject for e in first.entries}
    same = decide_version(1, first.sha256, first.summaries, first)
    assert not same.changed and same.seq == 1
    second = compute_content([issuance(2, "w", pki.leaf(["w.example.com"], inter_b), [inter_b], [root_b])],
                             "full", NOW, 90)
    d2 = decide_version(1, first.sha256, first.summaries, second)
    assert d2.changed and d2.seq == 2
    assert sorted(s.subject.split(",")[0] for s in d2.diff.added) == ["CN=Inter B", "CN=Root B"]
    assert sorted(s.subject.split(",")[0] for s in d2.diff.removed) == ["CN=Inter A", "CN=Root A"]
    # going back to the first content is a new version number with the old hash
    d3 = decide_version(2, second.sha256, second.summaries, first)
    assert d3.changed and d3.seq == 3 and d3.sha256 == first.sha256


def test_empty_content_never_becomes_a_version() -> None:
    from certd.trust.bundles import BundleContent

    empty = BundleContent("full", (), ())
    assert not decide_version(None, None, [], empty).changed
    assert not decide_version(4, "ab" * 32, [], empty).changed


def test_diff_lines_and_json_roundtrip() -> None:
    a = CertSummary("aa" * 32, "CN=New Root", "CN=New Root", NOW, "root")
    b = CertSummary("bb" * 32, "CN=Old Inter", "CN=Old Root", NOW, "intermediate")
    diff = diff_summaries([b], [a])
    assert diff == BundleDiff((a,), (b,))
    assert BundleDiff.from_json(diff.to_json()) == diff
    lines = diff.lines()
    assert lines[0].startswith("+ root") and "CN=New Root" in lines[0] and "aa" * 32 in lines[0]
    assert lines[1].startswith("- intermediate") and NOW.strftime("%Y-%m-%d") in lines[1]
    assert BundleDiff().lines() == ["(no change)"]


def test_manifest_fields(hierarchy) -> None:
    root_a, _, inter_a, _ = hierarchy
    content = compute_content([issuance(1, "web", pki.leaf(["web.example.com", "alt.example.com"], inter_a),
                                        [inter_a], [root_a], domains=("web.example.com", "alt.example.com"))],
                              "full", NOW, 90)
    doc = manifest("fleet", "full", 7, content, NOW)
    assert doc["version"] == 7 and doc["sha256"] == content.sha256 and doc["flavour"] == "full"
    assert doc["server_names"] == ["alt.example.com", "web.example.com"]
    certs = doc["certificates"]
    assert {c["role"] for c in certs} == {"root", "intermediate"}
    assert all(set(c) >= {"subject", "fingerprint", "not_after", "role", "server_names"} for c in certs)


def test_unknown_flavour_refused(hierarchy) -> None:
    with pytest.raises(ValueError, match="unknown bundle flavour"):
        compute_content([], "everything", NOW, 90)
