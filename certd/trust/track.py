"""After every issuance: record the chain, recompute bundles, queue and send deliveries.

`on_issued(config, engine, issued)` is the one entry point the issuance flow
calls. Store writes (CA certificates, chain links via `certd.trust.chain_records`,
new bundle versions, outbox rows) happen in one transaction; files (configured
exports) and pushes (registry deliveries) come after the commit, and their
failures are reported in the result, never undo the recorded state.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlmodel import Session, select

from certd.config import Config
from certd.config.trust import DEFAULT_ANCHOR_SET, BundleConfig
from certd.errors import ConfigError
from certd.store.db import session_scope
from certd.store.models import IssuedCertificate
from certd.store.trust import TrustBundleVersion
from certd.store.types import utcnow
from certd.trust import TrustError, outbox, versions
from certd.trust.anchors import anchor_set
from certd.trust.bundles import BundleDiff, compute_content, decide_version, manifest
from certd.trust.chain_records import issuance_chains, record_chains
from certd.trust.chains import AnchorSet
from certd.trust.export import export_is_current, export_version
from certd.trust.quectel import format_checksum, xor16

log = logging.getLogger(__name__)
MAX_TRANSACTION_TRIES = 3


@dataclass(frozen=True)
class BundleChange:
    bundle: str
    flavour: str
    seq: int
    sha256: str
    previous_seq: int | None
    diff: BundleDiff
    notes: tuple[str, ...]
    reason: str

    def headline(self) -> str:
        prev = f"v{self.previous_seq}" if self.previous_seq else "nothing"
        return f"bundle {self.bundle} ({self.flavour}): {prev} -> v{self.seq} ({self.reason})"


@dataclass
class TrackResult:
    """What changed because of one issuance (a later rollover gate reads `changed`/`added`)."""

    issued_id: int | None
    name: str
    chain: list[tuple[str, str, str]] = field(default_factory=list)  # (role, subject, sha256)
    changes: list[BundleChange] = field(default_factory=list)
    deliveries: list[outbox.DeliveryReport] = field(default_factory=list)
    exported: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    export_failures: list[str] = field(default_factory=list)  # also in `warnings`

    @property
    def undelivered(self) -> list[outbox.DeliveryReport]:
        """Deliveries tried now that a registry did not accept (retry or rejected)."""
        return [d for d in self.deliveries if d.outcome != "accepted"]

    @property
    def failed(self) -> bool:
        """An export could not be written or a delivery tried now was not accepted."""
        return bool(self.export_failures or self.undelivered)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def added_fingerprints(self) -> set[str]:
        return {s.fingerprint for c in self.changes for s in c.diff.added}


# -- config helpers ---------------------------------------------------------
def covered_names(config: Config, bundle: BundleConfig) -> list[str]:
    """Certificate names a bundle covers; an unknown name is a config error with its key path."""
    known = [c.name for c in config.certificates]
    if not bundle.certificates:
        return known
    index = config.trust.bundles.index(bundle)
    for i, name in enumerate(bundle.certificates):
        if name not in known:
            raise ConfigError(
                f"trust.bundles[{index}].certificates[{i}]: no certificate named {name!r} "
                f"(known: {', '.join(known) or 'none configured'})"
            )
    return list(bundle.certificates)


def bundles_covering(config: Config, name: str) -> list[BundleConfig]:
    return [b for b in config.trust.bundles if name in covered_names(config, b)]


# -- bundles ----------------------------------------------------------------
def _recompute(
    session: Session, config: Config, bundle: BundleConfig, anchors: AnchorSet, now: dt.datetime,
    reason: str, warnings: list[str], strict_id: int | None,
) -> list[BundleChange]:
    names = covered_names(config, bundle)
    issuances = issuance_chains(session, names, anchors, now, bundle.recent_days, warnings, strict_id)
    changes = []
    for flavour in bundle.flavours:
        content = compute_content(issuances, flavour, now, bundle.recent_days)
        last = versions.latest(session, bundle.name, flavour)
        decision = decide_version(
            last.seq if last else None, last.sha256 if last else None,
            versions.members(last) if last else [], content)
        if not decision.changed:
            continue
        why = reason
        if content.notes and not decision.diff.added:
            why = f"{reason}; expired CA certificate(s) dropped"
        body = manifest(bundle.name, flavour, decision.seq, content, now)
        data = content.pem.encode("ascii")
        body["size"] = len(data)
        body["xor16"] = format_checksum(xor16(data))
        row = TrustBundleVersion(
            bundle=bundle.name, flavour=flavour, seq=decision.seq, sha256=decision.sha256,
            previous_seq=last.seq if last else None, previous_sha256=last.sha256 if last else None,
            pem=content.pem, manifest_json=json.dumps(body, sort_keys=True),
            diff_json=json.dumps(decision.diff.to_json()), notes_json=json.dumps(list(content.notes)),
            reason=why, created_at=now,
        )
        session.add(row)
        session.flush()
        outbox.enqueue(session, config, row)
        changes.append(BundleChange(bundle.name, flavour, decision.seq, decision.sha256,
                                    row.previous_seq, decision.diff, content.notes, why))
    return changes


def _write_exports(config: Config, changes: list[BundleChange], engine: sa.Engine,
                   result: TrackResult, bundles: list[BundleConfig] | None = None) -> None:
    """Write the exports of the flavours that changed, and (for `bundles`) every export whose
    files are missing or not the latest version's, e.g. after an earlier failed write."""
    changed = {(c.bundle, c.flavour) for c in changes}
    for bundle_name, flavour in sorted(changed):
        _export_latest(config.trust.bundle(bundle_name), flavour, engine, result, only_stale=False)
    for bundle in bundles or []:
        for flavour in bundle.flavours:
            if (bundle.name, flavour) not in changed:
                _export_latest(bundle, flavour, engine, result, only_stale=True)


def _export_latest(bundle: BundleConfig, flavour: str, engine: sa.Engine, result: TrackResult,
                   only_stale: bool) -> None:
    exports = [e for e in bundle.exports if e.flavour == flavour]
    if not exports:
        return
    with session_scope(engine) as session:
        row = versions.latest(session, bundle.name, flavour)
        version = versions.to_export(row) if row is not None else None
    if version is None:
        return
    for export in exports:
        try:
            if only_stale and export_is_current(version, export.format, export.dir, bundle.quectel):
                continue
            files = export_version(version, export.format, export.dir, bundle.quectel)
            result.exported += [str(f) for f in files]
        except TrustError as exc:
            result.export_failures.append(f"bundle {bundle.name} export to {export.dir}: {exc}")


def _run(
    config: Config, engine: sa.Engine, bundles: list[BundleConfig], result: TrackResult,
    now: dt.datetime, reason: str, issued: IssuedCertificate | None,
) -> None:
    """Record + recompute in one transaction (retried when another node won a race)."""
    anchor_sets: dict[str, AnchorSet] = {}
    for bundle in bundles:
        if bundle.anchors not in anchor_sets:
            anchor_sets[bundle.anchors] = anchor_set(config.trust, bundle.anchors)
    for attempt in range(1, MAX_TRANSACTION_TRIES + 1):
        warnings: list[str] = []
        try:
            with session_scope(engine) as session:
                changes: list[BundleChange] = []
                if issued is not None and not bundles:
                    _record_default(session, config, issued, result, warnings)
                for bundle in bundles:
                    anchors = anchor_sets[bundle.anchors]
                    if issued is not None and not result.chain:
                        links = record_chains(session, issued, anchors, warnings)
                        result.chain = [(l.role, l.cert.subject, l.cert.fingerprint) for l in links[0]]
                    changes += _recompute(session, config, bundle, anchors, now, reason, warnings,
                                          issued.id if issued is not None else None)
            result.changes = changes
            result.warnings += warnings
            return
        except sa.exc.IntegrityError:
            result.chain = []
            if attempt == MAX_TRANSACTION_TRIES:
                raise
            log.info("bundle update raced with another certd; recomputing")


def _record_default(session: Session, config: Config, issued: IssuedCertificate,
                    result: TrackResult, warnings: list[str]) -> None:
    """No bundle covers this certificate: record its chain against the default anchors if possible."""
    try:
        anchors = anchor_set(config.trust, DEFAULT_ANCHOR_SET)
        links = record_chains(session, issued, anchors, warnings)
        result.chain = [(l.role, l.cert.subject, l.cert.fingerprint) for l in links[0]]
    except TrustError as exc:
        warnings.append(f"{exc} (no bundle covers {issued.name}, so this is only a note)")


def on_issued(
    config: Config, engine: sa.Engine, issued: IssuedCertificate, *,
    now: dt.datetime | None = None, deliver: bool = True,
) -> TrackResult:
    """Record `issued`'s chain, recompute the bundles that cover it, queue and send deliveries.

    Raises `UnanchoredChainError` when a bundle covers the certificate and its
    served chain reaches no anchor of that bundle's anchor set (nothing is
    recorded then). Export and delivery problems are in `result.warnings` and
    `result.deliveries`; undelivered rows stay in the outbox for `certd fleet push`.
    """
    now = now or utcnow()
    result = TrackResult(issued.id, issued.name)
    bundles = bundles_covering(config, issued.name)
    _run(config, engine, bundles, result, now, f"issued {issued.name} (#{issued.id})", issued)
    _after_commit(config, engine, result, deliver, now)
    return result


def refresh_bundles(
    config: Config, engine: sa.Engine, *, now: dt.datetime | None = None, reason: str = "refresh",
    deliver: bool = True, only: list[str] | None = None,
) -> TrackResult:
    """Recompute every bundle (or `only` these) without an issuance: new config, expired CAs.

    Also rewrites every configured export whose files are missing or stale, so an export that
    failed once (directory missing, disk full) is repaired by the next refresh.
    """
    now = now or utcnow()
    result = TrackResult(None, "*")
    bundles = [b for b in config.trust.bundles if only is None or b.name in only]
    for bundle in bundles:
        covered_names(config, bundle)  # config errors before any work
    _run(config, engine, bundles, result, now, reason, None)
    _after_commit(config, engine, result, deliver, now, rewrite_stale=bundles)
    return result


def _after_commit(config: Config, engine: sa.Engine, result: TrackResult, deliver: bool,
                  now: dt.datetime, rewrite_stale: list[BundleConfig] | None = None) -> None:
    for change in result.changes:
        log.info("%s", change.headline())
    for warning in result.warnings:
        log.warning("%s", warning)
    _write_exports(config, result.changes, engine, result, rewrite_stale)
    for failure in result.export_failures:
        log.warning("%s", failure)
    result.warnings += result.export_failures
    if deliver and result.changes:
        with session_scope(engine) as session:
            ids = [d.id for d in session.exec(select(outbox.TrustDelivery).where(
                outbox.TrustDelivery.state == outbox.PENDING)).all() if d.id is not None]
        # Send what this change queued (and anything else already due), without blocking on the rest.
        result.deliveries = outbox.deliver(config, engine, now=now, ids=ids)
