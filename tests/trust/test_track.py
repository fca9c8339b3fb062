"""on_issued / refresh_bundles against a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlmodel import select

from certd.errors import ConfigError
from certd.store.db import session_scope
from certd.store.trust import TrustBundleVersion, TrustCaCertificate, TrustChainLink, TrustDelivery
from certd.trust import UnanchoredChainError, versions
from certd.trust.track import on_issued, refresh_bundles
from tests import pki
from tests.trust.conftest import bundle_toml

REGISTRY = """
[[trust.registries]]
name = "fleetreg"
url = "http://127.0.0.1:9/unused"
hmac_secret_env = "CERTD_TEST_HMAC"
flavours = ["full"]
"""


def short(subject: str) -> str:
    return subject.split(",")[0].removeprefix("CN=")


def test_first_issuance_records_chain_and_creates_versions(db_world) -> None:
    root = pki.root("Lab Root 1")
    inter = pki.intermediate("Lab Inter 1", root)
    db_world.trust_anchor(root)
    config = db_world.config(bundle_toml(db_world.anchors_dir, registries=REGISTRY))
    issued = db_world.issue("ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], inter), [inter])

    result = on_issued(config, db_world.engine, issued, deliver=False)

    assert [(r, short(s)) for r, s, _ in result.chain] == [("intermediate", "Lab Inter 1"), ("root", "Lab Root 1")]
    assert {(c.flavour, c.seq) for c in result.changes} == {("roots", 1), ("full", 1)}
    full = next(c for c in result.changes if c.flavour == "full")
    assert sorted(short(s.subject) for s in full.diff.added) == ["Lab Inter 1", "Lab Root 1"]
    with session_scope(db_world.engine) as session:
        links = session.exec(select(TrustChainLink).where(TrustChainLink.issued_id == issued.id)).all()
        assert [(l.position, l.role, l.served) for l in links] == [(0, "intermediate", True), (1, "root", False)]
        cas = session.exec(select(TrustCaCertificate)).all()
        assert {short(c.subject) for c in cas} == {"Lab Inter 1", "Lab Root 1"}
        version = versions.get(session, "fleet", "full")
        assert version.seq == 1 and version.pem.count("BEGIN CERTIFICATE") == 2
        manifest = json.loads(version.manifest_json)
        assert manifest["server_names"] == ["ocpp.example.com"]  # web was never issued
        # only the full flavour goes to this registry
        deliveries = session.exec(select(TrustDelivery)).all()
        assert len(deliveries) == 1 and deliveries[0].version_id == version.id
        assert deliveries[0].state == "pending"
        body = json.loads(deliveries[0].body)
        assert body["version"] == 1 and body["previous_version"] is None
        assert body["sha256"] == version.sha256 and body["pem"] == version.pem
        assert body["idempotency_key"] == deliveries[0].idempotency_key


def test_reissue_same_chain_keeps_version_and_second_call_is_idempotent(world) -> None:
    root = pki.root("Lab Root 2")
    inter = pki.intermediate("Lab Inter 2", root)
    world.trust_anchor(root)
    config = world.config(bundle_toml(world.anchors_dir))
    first = world.issue("ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], inter), [inter])
    assert on_issued(config, world.engine, first, deliver=False).changed
    assert not on_issued(config, world.engine, first, deliver=False).changed
    second = world.issue("ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], inter), [inter])
    result = on_issued(config, world.engine, second, deliver=False)
    assert not result.changed and result.chain
    with session_scope(world.engine) as session:
        assert [v.seq for v in versions.history(session, "fleet", "full")] == [1]


def test_new_root_makes_new_version_whose_diff_names_root_and_intermediate(world) -> None:
    old_root, new_root = pki.root("Lab Root Old"), pki.root("Lab Root New")
    old_inter, new_inter = pki.intermediate("Inter Old", old_root), pki.intermediate("Inter New", new_root)
    world.trust_anchor(old_root, new_root)
    config = world.config(bundle_toml(world.anchors_dir))
    on_issued(config, world.engine, world.issue(
        "ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], old_inter), [old_inter]), deliver=False)
    result = on_issued(config, world.engine, world.issue(
        "ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], new_inter), [new_inter]), deliver=False)

    full = next(c for c in result.changes if c.flavour == "full")
    roots = next(c for c in result.changes if c.flavour == "roots")
    assert full.seq == 2 and full.previous_seq == 1
    assert sorted(short(s.subject) for s in full.diff.added) == ["Inter New", "Lab Root New"]
    assert full.diff.removed == ()  # the previous chain stays while its leaf is recent and valid
    assert [short(s.subject) for s in roots.diff.added] == ["Lab Root New"]
    assert result.added_fingerprints == {s.fingerprint for s in full.diff.added}
    # after the recent window the old chain leaves the bundle
    later = pki.NOW + dt.timedelta(days=91)
    refreshed = refresh_bundles(config, world.engine, now=later, deliver=False)
    full3 = next(c for c in refreshed.changes if c.flavour == "full")
    assert full3.seq == 3 and sorted(short(s.subject) for s in full3.diff.removed) == ["Inter Old", "Lab Root Old"]


def test_unanchored_chain_is_an_error_and_records_nothing(world) -> None:
    root = pki.root("Unknown Root")
    inter = pki.intermediate("Unknown Inter", root)
    world.trust_anchor(pki.root("Some Other Root"))
    config = world.config(bundle_toml(world.anchors_dir))
    issued = world.issue("ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], inter), [inter])
    with pytest.raises(UnanchoredChainError, match=r"chain of ocpp .*reaches no trust anchor.*Unknown Inter.*'lab'"):
        on_issued(config, world.engine, issued, deliver=False)
    with session_scope(world.engine) as session:
        assert session.exec(select(TrustChainLink)).all() == []
        assert session.exec(select(TrustBundleVersion)).all() == []


def test_certificate_outside_every_bundle_is_recorded_without_error(world) -> None:
    root = pki.root("Lab Root 3")
    inter = pki.intermediate("Lab Inter 3", root)
    world.trust_anchor(root)
    config = world.config(bundle_toml(world.anchors_dir, certificates=["ocpp"]))
    issued = world.issue("web", ["web.example.com"], pki.leaf(["web.example.com"], inter), [inter])
    result = on_issued(config, world.engine, issued, deliver=False)
    assert not result.changed
    # the default anchor set (system store) does not hold the test root: a note, not an error
    assert any("reaches no trust anchor" in w and "only a note" in w for w in result.warnings)


def test_unanchored_alternate_is_left_out_with_a_warning(world) -> None:
    root = pki.root("Lab Root 4")
    inter = pki.intermediate("Lab Inter 4", root)
    stray_root = pki.root("Stray Root")
    inter_by_stray = pki.cross_sign(inter, stray_root)
    world.trust_anchor(root)
    config = world.config(bundle_toml(world.anchors_dir))
    issued = world.issue("ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], inter), [inter],
                         alternates=[[inter_by_stray]])
    result = on_issued(config, world.engine, issued, deliver=False)
    assert any("alternate chain 1 of ocpp reaches no trust anchor" in w for w in result.warnings)
    full = next(c for c in result.changes if c.flavour == "full")
    assert sorted(short(s.subject) for s in full.diff.added) == ["Lab Inter 4", "Lab Root 4"]


def test_alternate_chains_add_their_certificates_to_full(world) -> None:
    x1 = pki.root("ISRG Root X1")
    yr = pki.root("Root YR")
    yr_cross = pki.cross_sign(yr, x1)
    yr1 = pki.intermediate("YR1", yr)
    world.trust_anchor(x1, yr)
    config = world.config(bundle_toml(world.anchors_dir))
    leaf = pki.leaf(["ocpp.example.com"], yr1)
    issued = world.issue("ocpp", ["ocpp.example.com"], leaf, [yr1, yr_cross], alternates=[[yr1]])
    result = on_issued(config, world.engine, issued, deliver=False)
    with session_scope(world.engine) as session:
        full = versions.members(versions.get(session, "fleet", "full"))
        roots = versions.members(versions.get(session, "fleet", "roots"))
    assert sorted((short(s.subject), s.role) for s in roots) == [("ISRG Root X1", "root"), ("Root YR", "root")]
    assert sorted((short(s.subject), s.role) for s in full) == [
        ("ISRG Root X1", "root"), ("Root YR", "cross-sign"), ("Root YR", "root"), ("YR1", "intermediate")]
    assert result.changed


def test_expired_intermediate_dropped_on_refresh_with_note(world) -> None:
    root = pki.root("Lab Root 5")
    dying = pki.intermediate("Dying Inter", root, not_after=pki.NOW + dt.timedelta(days=5))
    world.trust_anchor(root)
    config = world.config(bundle_toml(world.anchors_dir))
    on_issued(config, world.engine, world.issue(
        "ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], dying, days=4), [dying]), deliver=False)
    # the leaf expired with it, but it is the latest issuance: its chain stays considered
    result = refresh_bundles(config, world.engine, now=pki.NOW + dt.timedelta(days=6), deliver=False)
    full = next(c for c in result.changes if c.flavour == "full")
    assert [short(s.subject) for s in full.diff.removed] == ["Dying Inter"]
    assert "expired CA certificate(s) dropped" in full.reason
    assert any("dropped expired intermediate" in n and "Dying Inter" in n for n in full.notes)
    assert not any(c.flavour == "roots" for c in result.changes)


def test_unknown_certificate_in_bundle_is_a_config_error_with_key_path(world) -> None:
    config = world.config(bundle_toml(world.anchors_dir, certificates=["ocpp", "nope"]))
    with pytest.raises(ConfigError, match=r"trust\.bundles\[0\]\.certificates\[1\]: no certificate named 'nope'"):
        refresh_bundles(config, world.engine, deliver=False)


def test_configured_exports_are_written_on_change(world, tmp_path) -> None:
    root = pki.root("Lab Root 6")
    inter = pki.intermediate("Lab Inter 6", root)
    world.trust_anchor(root)
    out = tmp_path / "exports"
    extra = (f'[[trust.bundles.exports]]\nformat = "quectel"\ndir = "{out}"\n'
             f'[[trust.bundles.exports]]\nformat = "pem"\ndir = "{out}"\nflavour = "roots"\n')
    config = world.config(bundle_toml(world.anchors_dir, extra=extra))
    result = on_issued(config, world.engine, world.issue(
        "ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], inter), [inter]), deliver=False)
    assert sorted(p.rsplit("/", 1)[1] for p in result.exported) == [
        "fleet-full.ca.pem", "fleet-full.quectel.at", "fleet-roots.pem"]
    assert (out / "fleet-full.ca.pem").read_text().count("BEGIN CERTIFICATE") == 2
    assert (out / "fleet-roots.pem").read_text() == root.pem
