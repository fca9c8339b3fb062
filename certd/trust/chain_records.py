"""Chains of issuances as the store keeps them: resolved once per anchor set, read back per bundle.

`record_chains` resolves an issuance's served chain and its alternates against an
anchor set and stores the links (and each CA certificate) once; `issuance_chains`
picks the issuances a bundle must still cover (young enough, or in use by a
deployment or a rollover gate) and returns their recorded chains. Everything runs
in the caller's session: the bundle recomputation in `certd.trust.track` commits it.
"""

from __future__ import annotations

import datetime as dt
import json

from cryptography import x509
from sqlmodel import Session, select

from certd.store.models import IssuedCertificate, ManagedCertificate
from certd.store.rollover import RolloverGate
from certd.store.trust import TrustCaCertificate, TrustChainLink
from certd.trust import TrustError, UnanchoredChainError
from certd.trust.bundles import IssuanceChains
from certd.trust.certs import CaCert, parse_pem_bundle
from certd.trust.chains import AnchorSet, ChainLink, build_path


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _store_ca(session: Session, cert: CaCert) -> None:
    if session.get(TrustCaCertificate, cert.fingerprint) is None:
        session.add(TrustCaCertificate(
            fingerprint=cert.fingerprint, subject=cert.subject, issuer=cert.issuer,
            spki_sha256=cert.spki_sha256, not_before=cert.not_before, not_after=cert.not_after,
            self_signed=cert.self_signed, pem=cert.pem,
        ))
        session.flush()


def _load_links(session: Session, issued_id: int, anchors: str) -> tuple[tuple[ChainLink, ...], ...] | None:
    rows = session.exec(select(TrustChainLink).where(
        TrustChainLink.issued_id == issued_id, TrustChainLink.anchor_set == anchors,
    ).order_by(TrustChainLink.chain_index, TrustChainLink.position)).all()
    if not rows:
        return None
    certs: dict[str, CaCert] = {}
    chains: dict[int, list[ChainLink]] = {}
    for row in rows:
        if row.fingerprint not in certs:
            stored = session.get(TrustCaCertificate, row.fingerprint)
            assert stored is not None
            certs[row.fingerprint] = parse_pem_bundle(stored.pem, "store")[0]
        chains.setdefault(row.chain_index, []).append(
            ChainLink(certs[row.fingerprint], row.role, row.served, row.in_path))
    return tuple(tuple(chains[i]) for i in sorted(chains))


def record_chains(
    session: Session, issued: IssuedCertificate, anchors: AnchorSet, warnings: list[str],
) -> tuple[tuple[ChainLink, ...], ...]:
    """Resolve the served chain and the alternates against `anchors` and store them (once).

    The served chain reaching no anchor raises `UnanchoredChainError`; an
    alternate that reaches none is left out with a warning.
    """
    assert issued.id is not None
    existing = _load_links(session, issued.id, anchors.name)
    if existing is not None:
        return existing
    what = f"the chain of {issued.name} (issued #{issued.id})"
    leaf = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    served = parse_pem_bundle(issued.chain_pem, f"{what}: chain_pem")
    alternates: list[tuple[x509.Certificate, list[CaCert]]] = []
    for i, alt_pem in enumerate(json.loads(issued.alternate_chains or "[]"), 1):
        certs = parse_pem_bundle(alt_pem, f"{what}: alternate chain {i}")
        if certs and not _is_ca(certs[0].cert):
            alternates.append((certs[0].cert, certs[1:]))
        else:
            alternates.append((leaf, certs))
    pool = [*served, *(c for _, cas in alternates for c in cas)]
    resolved: dict[int, tuple[ChainLink, ...]] = {
        0: build_path(leaf, served, anchors, pool, what=what).links}
    for i, (alt_leaf, alt_cas) in enumerate(alternates, 1):
        try:
            resolved[i] = build_path(alt_leaf, alt_cas, anchors, pool,
                                     what=f"alternate chain {i} of {issued.name}").links
        except UnanchoredChainError as exc:
            warnings.append(f"{exc} (left out of the bundles)")
    for index, links in resolved.items():
        for position, link in enumerate(links):
            _store_ca(session, link.cert)
            session.add(TrustChainLink(
                issued_id=issued.id, anchor_set=anchors.name, chain_index=index, position=position,
                fingerprint=link.cert.fingerprint, role=link.role, served=link.served,
                in_path=link.in_path,
            ))
    session.flush()
    return tuple(resolved[i] for i in sorted(resolved))


def _in_use_ids(session: Session, names: list[str]) -> set[int]:
    """Issuances something still uses: current, deployed, or served/pending at a rollover gate."""
    ids: set[int | None] = set()
    for name in names:
        managed = session.get(ManagedCertificate, name)
        if managed is not None:
            ids.update((managed.current_id, managed.deployed_id))
    gates = session.exec(select(RolloverGate).where(RolloverGate.cert_name.in_(names))).all()  # type: ignore[attr-defined]
    for gate in gates:
        ids.update((gate.served_id, gate.pending_id))
    return {i for i in ids if i is not None}


def _issuance_rows(
    session: Session, names: list[str], horizon: dt.datetime,
) -> tuple[list[IssuedCertificate], set[int]]:
    """Issuances young enough to matter, each name's newest one and those in use (with their ids)."""
    if not names:
        return [], set()
    rows = {r.id: r for r in session.exec(select(IssuedCertificate).where(
        IssuedCertificate.name.in_(names), IssuedCertificate.issued_at >= horizon)).all()}  # type: ignore[attr-defined]
    for name in names:
        newest = session.exec(select(IssuedCertificate).where(IssuedCertificate.name == name)
                              .order_by(IssuedCertificate.issued_at.desc(),  # type: ignore[attr-defined]
                                        IssuedCertificate.id.desc())).first()  # type: ignore[union-attr]
        if newest is not None:
            rows[newest.id] = newest
    in_use = _in_use_ids(session, names)
    for issued_id in in_use - set(rows):
        row = session.get(IssuedCertificate, issued_id)
        if row is not None and row.name in names:
            rows[row.id] = row
    return sorted(rows.values(), key=lambda r: r.id or 0), in_use


def issuance_chains(
    session: Session, names: list[str], anchors: AnchorSet, now: dt.datetime, recent_days: float,
    warnings: list[str], strict_id: int | None,
) -> list[IssuanceChains]:
    """Recorded chains of `names`' issuances that still matter; a chain that reaches no anchor is left
    out with a warning, unless it is issuance `strict_id`'s (the one just issued): then it raises."""
    result = []
    rows, in_use = _issuance_rows(session, names, now - dt.timedelta(days=recent_days))
    for row in rows:
        try:
            chains = record_chains(session, row, anchors, warnings)
        except TrustError as exc:
            if row.id == strict_id:
                raise
            warnings.append(f"{exc} (issuance #{row.id} left out of the bundles)")
            continue
        result.append(IssuanceChains(
            issued_id=row.id or 0, name=row.name,
            domains=tuple(d for d in row.domains.split(",") if d),
            issued_at=row.issued_at, leaf_not_after=row.not_after, chains=chains,
            in_use=row.id in in_use))
    return result


