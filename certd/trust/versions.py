"""Read bundle versions back from the store (show, diff, history, export)."""

from __future__ import annotations

import json

from sqlmodel import Session, select

from certd.store.trust import TrustBundleVersion
from certd.trust import TrustError
from certd.trust.bundles import BundleDiff, CertSummary, diff_summaries
from certd.trust.formats import VersionToExport


def latest(session: Session, bundle: str, flavour: str) -> TrustBundleVersion | None:
    return session.exec(
        select(TrustBundleVersion)
        .where(TrustBundleVersion.bundle == bundle, TrustBundleVersion.flavour == flavour)
        .order_by(TrustBundleVersion.seq.desc())  # type: ignore[attr-defined]
    ).first()


def history(session: Session, bundle: str, flavour: str) -> list[TrustBundleVersion]:
    return list(session.exec(
        select(TrustBundleVersion)
        .where(TrustBundleVersion.bundle == bundle, TrustBundleVersion.flavour == flavour)
        .order_by(TrustBundleVersion.seq)
    ).all())


def get(session: Session, bundle: str, flavour: str, seq: int | None = None) -> TrustBundleVersion:
    """Version `seq` (default: the latest); a missing one is an error that says what exists."""
    if seq is None:
        row = latest(session, bundle, flavour)
    else:
        row = session.exec(select(TrustBundleVersion).where(
            TrustBundleVersion.bundle == bundle, TrustBundleVersion.flavour == flavour,
            TrustBundleVersion.seq == seq)).first()
    if row is None:
        have = [v.seq for v in history(session, bundle, flavour)]
        if not have:
            raise TrustError(
                f"bundle {bundle!r} ({flavour}) has no version yet: it gets one when a covered "
                "certificate is issued (or run `certd bundle refresh`)"
            )
        raise TrustError(f"bundle {bundle!r} ({flavour}) has no version {seq} (versions: "
                         f"{', '.join(f'v{s}' for s in have)})")
    return row


def members(version: TrustBundleVersion) -> list[CertSummary]:
    manifest = json.loads(version.manifest_json)
    return [CertSummary.from_json(c) for c in manifest.get("certificates", [])]


def stored_diff(version: TrustBundleVersion) -> BundleDiff:
    return BundleDiff.from_json(json.loads(version.diff_json))


def diff_between(old: TrustBundleVersion, new: TrustBundleVersion) -> BundleDiff:
    return diff_summaries(members(old), members(new))


def to_export(version: TrustBundleVersion) -> VersionToExport:
    return VersionToExport(bundle=version.bundle, flavour=version.flavour, seq=version.seq,
                           sha256=version.sha256, pem=version.pem,
                           manifest=json.loads(version.manifest_json))
