"""Charger certificates in the store: requests, issuance, delivery, revocation, renewal state.

Synchronous (SQLAlchemy): the OCPP side calls these in worker threads and applies what
they return on its loop. Every row here is shared with the CLI and other nodes: a
`certd chargers revoke-cert` in another process is a row change the daemon notices
(`certd.chargerca.peers.RevocationWatermark`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from sqlmodel import Session, select

from certd.chargerca import authority, timing
from certd.chargerca.csr import Standing
from certd.config.charger_ca import ChargerCaConfig
from certd.store.charger_ca import (
    CERT_ACTIVE, CERT_ISSUED, CERT_REJECTED, CERT_REVOKED, CERT_SUPERSEDED,
    DELIVERY_ACCEPTED, DELIVERY_NONE, DELIVERY_PENDING, DELIVERY_REJECTED,
    ChargerCertificate, ChargerCertRenewal, ChargerCsrRequest,
)
from certd.store.chargers import REGISTRATION_ACCEPTED, Charger
from certd.store.db import session_scope

CHUNK = 500  # ids per IN (...) query


@dataclass(frozen=True)
class CertView:
    """A detached charger certificate row (what the CLI, the loop and tests read)."""

    charger_id: str
    serial: str
    fingerprint: str
    ca_fingerprint: str
    key_type: str
    state: str
    source: str
    delivery: str
    delivery_attempts: int
    next_delivery_at: dt.datetime | None
    delivery_detail: str | None
    not_before: dt.datetime
    not_after: dt.datetime
    issued_at: dt.datetime
    first_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    cert_pem: str

    def life(self) -> timing.CertLife:
        """Its life for renewal timing: from issuance (not_before is backdated for clock skew)."""
        return timing.CertLife(self.serial, min(self.issued_at, self.not_after), self.not_after,
                               self.ca_fingerprint)


def view(row: ChargerCertificate) -> CertView:
    return CertView(row.charger_id, row.serial, row.fingerprint, row.ca_fingerprint, row.key_type,
                    row.state, row.source, row.delivery, row.delivery_attempts, row.next_delivery_at,
                    row.delivery_detail, row.not_before, row.not_after, row.issued_at,
                    row.first_used_at, row.revoked_at, row.cert_pem)


@dataclass(frozen=True)
class Issued:
    """A certificate just issued: what CertificateSigned carries."""

    cert: CertView
    chain_pem: str  # leaf first, then the issuing CA and any intermediates


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


_CHARGERS = Charger.__table__  # type: ignore[attr-defined]
_STANDING = sa.select(_CHARGERS.c.enabled, _CHARGERS.c.registration).where(
    _CHARGERS.c.charger_id == sa.bindparam("charger_id"))  # built once: one read per CSR


def standing(engine: sa.Engine, charger_id: str) -> Standing | None:
    with engine.connect() as conn:
        row = conn.execute(_STANDING, {"charger_id": charger_id}).first()
    return Standing(enabled=bool(row[0]), approved=row[1] == REGISTRATION_ACCEPTED) if row else None


def record_refusal(engine: sa.Engine, charger_id: str, reason: str, *, listener: str | None,
                   version: str | None, csr_sha256: str | None = None) -> None:
    with session_scope(engine) as session:
        session.add(ChargerCsrRequest(charger_id=charger_id, listener=listener, ocpp_version=version,
                                      csr_sha256=csr_sha256, decision="refused", reason=reason))


def _renewal(session: Session, charger_id: str) -> ChargerCertRenewal:
    row = session.get(ChargerCertRenewal, charger_id)
    if row is None:
        row = ChargerCertRenewal(charger_id=charger_id)
        session.add(row)
    return row


@dataclass(frozen=True)
class ToStore:
    """A certificate just signed, with the request it answers."""

    ca: authority.IssuingCa
    leaf: x509.Certificate
    charger_id: str
    key_type: str
    now: dt.datetime
    listener: str | None = None
    version: str | None = None
    csr_sha256: str | None = None
    source: str = "csr"


def store_issued_batch(engine: sa.Engine, items: Sequence[ToStore]) -> list[Issued]:
    """Record signed certificates and their requests, all in one transaction.

    Older certificates of these chargers still waiting for delivery are superseded first (the
    charger sent a new CSR, so it will not install them); that write comes first so SQLite
    takes its write lock at once. Within the batch, a charger's newest certificate wins too.
    """
    table = ChargerCertificate.__table__  # type: ignore[attr-defined]
    rows: list[ChargerCertificate] = []
    with session_scope(engine) as session:
        for part in chunks(sorted({item.charger_id for item in items})):
            session.execute(sa.update(table).where(table.c.charger_id.in_(part), table.c.state == CERT_ISSUED)
                            .values(state=CERT_SUPERSEDED, delivery_detail="a newer CSR arrived before delivery"))
        newest: dict[str, ChargerCertificate] = {}
        for item in items:
            serial = f"{item.leaf.serial_number:x}"
            row = ChargerCertificate(
                charger_id=item.charger_id, serial=serial, fingerprint=authority.fingerprint(item.leaf),
                ca_fingerprint=item.ca.fingerprint, key_type=item.key_type,
                not_before=item.leaf.not_valid_before_utc, not_after=item.leaf.not_valid_after_utc,
                state=CERT_ISSUED, source=item.source,
                delivery=DELIVERY_PENDING if item.source == "csr" else DELIVERY_NONE,
                cert_pem=authority.cert_pem(item.leaf), issued_at=item.now)
            if item.charger_id in newest:
                older = newest[item.charger_id]
                older.state, older.delivery_detail = CERT_SUPERSEDED, "a newer CSR arrived before delivery"
            newest[item.charger_id] = row
            rows.append(row)
            session.add(row)
            session.add(ChargerCsrRequest(charger_id=item.charger_id, listener=item.listener,
                                          ocpp_version=item.version, csr_sha256=item.csr_sha256,
                                          key_type=item.key_type, decision="accepted", serial=serial,
                                          at=item.now))
        session.flush()
        views = [view(row) for row in rows]
    return [Issued(v, v.cert_pem + item.ca.chain_pem()) for v, item in zip(views, items)]


def store_issued(engine: sa.Engine, ca: authority.IssuingCa, leaf: x509.Certificate, charger_id: str,
                 key_type: str, now: dt.datetime, *, listener: str | None, version: str | None,
                 csr_sha256: str | None, source: str = "csr") -> Issued:
    """One certificate: `store_issued_batch` of one."""
    return store_issued_batch(engine, [ToStore(ca, leaf, charger_id, key_type, now, listener, version,
                                               csr_sha256, source)])[0]


def issue(engine: sa.Engine, ca: authority.IssuingCa, charger_id: str,
          public_key: CertificatePublicKeyTypes, key_type: str, settings: ChargerCaConfig,
          now: dt.datetime, *, source: str = "kit") -> Issued:
    """Sign and record in one call (the CLI's provisioning kit; the OCPP side splits the two)."""
    leaf = authority.sign_leaf(ca, public_key, charger_id, settings.organization,
                               settings.leaf_validity_days, now)
    return store_issued(engine, ca, leaf, charger_id, key_type, now, listener=None, version=None,
                        csr_sha256=None, source=source)


def activate(session: Session, row: ChargerCertificate) -> None:
    """`row` becomes the charger's active certificate; the previous active one is superseded."""
    others = session.exec(select(ChargerCertificate).where(
        ChargerCertificate.charger_id == row.charger_id, ChargerCertificate.state == CERT_ACTIVE,
        ChargerCertificate.id != row.id)).all()
    for other in others:
        other.state = CERT_SUPERSEDED
    row.state = CERT_ACTIVE


@dataclass(frozen=True)
class Delivery:
    """What became of one CertificateSigned (see `record_deliveries`)."""

    serial: str
    outcome: str  # Accepted | Rejected | anything else: not reached
    detail: str | None = None
    move_after: bool = False


def record_deliveries(engine: sa.Engine, items: Sequence[Delivery], settings: ChargerCaConfig,
                      now: dt.datetime) -> list[str]:
    """What chargers did with CertificateSigned, in one transaction; their states after.

    Accepted: the certificate is active, renewal bookkeeping starts afresh (and the profile
    2 -> 3 move is queued when `move_after`). Rejected: recorded; a new CSR is asked for
    after the back-off. Not reached (offline, timeout, error): delivered again later.
    """
    certs = ChargerCertificate
    states = []
    with session_scope(engine) as session:
        # Three reads for the whole batch, then the changes in memory and one flush.
        rows = {r.serial: r for part in chunks([i.serial for i in items])
                for r in session.exec(select(certs).where(certs.serial.in_(part))).all()}  # type: ignore[attr-defined]
        ids = sorted({row.charger_id for row in rows.values()})
        renewals = {r.charger_id: r for part in chunks(ids) for r in session.exec(
            select(ChargerCertRenewal).where(ChargerCertRenewal.charger_id.in_(part))).all()}  # type: ignore[attr-defined]
        active: dict[str, list[ChargerCertificate]] = {}
        for part in chunks(ids):
            for r in session.exec(select(certs).where(certs.charger_id.in_(part),  # type: ignore[attr-defined]
                                                      certs.state == CERT_ACTIVE)).all():
                active.setdefault(r.charger_id, []).append(r)
        for item in items:
            row = rows[item.serial]
            renewal = renewals.get(row.charger_id)
            if renewal is None:
                renewal = renewals[row.charger_id] = ChargerCertRenewal(charger_id=row.charger_id)
                session.add(renewal)
            row.delivery_detail = item.detail
            renewal.updated_at = now
            if item.outcome == "Accepted":
                row.delivery, row.next_delivery_at = DELIVERY_ACCEPTED, None
                if row.state == CERT_ISSUED:
                    for other in active.get(row.charger_id, []):
                        if other is not row:
                            other.state = CERT_SUPERSEDED
                    row.state, active[row.charger_id] = CERT_ACTIVE, [row]
                renewal.requested_at, renewal.attempts, renewal.next_attempt_at = None, 0, None
                renewal.last_result = "certificate accepted"
                renewal.move_pending = item.move_after
            elif item.outcome == "Rejected":
                row.delivery = DELIVERY_REJECTED
                if row.state == CERT_ISSUED:
                    row.state = CERT_REJECTED
                renewal.attempts += 1
                renewal.next_attempt_at = now + timing.retry_delay(renewal.attempts, settings.retry_base,
                                                                   settings.retry_max)
                renewal.last_result = f"CertificateSigned rejected: {item.detail or 'no reason given'}"
            else:
                row.delivery_attempts += 1
                row.next_delivery_at = now + timing.retry_delay(row.delivery_attempts, settings.retry_base,
                                                                settings.retry_max)
            states.append(row.state)
    return states


def record_delivery(engine: sa.Engine, serial: str, outcome: str, detail: str | None,
                    settings: ChargerCaConfig, now: dt.datetime, *, move_after: bool = False) -> str:
    """One delivery: `record_deliveries` of one."""
    return record_deliveries(engine, [Delivery(serial, outcome, detail, move_after)], settings, now)[0]


def record_trigger(engine: sa.Engine, charger_id: str, result: str, settings: ChargerCaConfig,
                   now: dt.datetime) -> dt.datetime:
    """A renewal trigger was sent (or failed): the next one waits the back-off. Returns when."""
    with session_scope(engine) as session:
        renewal = _renewal(session, charger_id)
        renewal.attempts += 1
        renewal.last_attempt_at, renewal.last_result, renewal.updated_at = now, result, now
        renewal.next_attempt_at = now + timing.retry_delay(renewal.attempts, settings.retry_base,
                                                           settings.retry_max)
        return renewal.next_attempt_at


def record_move(engine: sa.Engine, charger_id: str, result: str, done: bool,
                settings: ChargerCaConfig, now: dt.datetime) -> None:
    with session_scope(engine) as session:
        renewal = _renewal(session, charger_id)
        renewal.last_result, renewal.updated_at = result, now
        if done:
            renewal.move_pending, renewal.attempts, renewal.next_attempt_at = False, 0, None
        else:
            renewal.attempts += 1
            renewal.next_attempt_at = now + timing.retry_delay(renewal.attempts, settings.retry_base,
                                                               settings.retry_max)


def request_renewal(engine: sa.Engine, charger_id: str, now: dt.datetime) -> None:
    """`certd chargers renew-cert ID`: ask the charger for a CSR when it is next connected."""
    with session_scope(engine) as session:
        renewal = _renewal(session, charger_id)
        renewal.requested_at, renewal.attempts, renewal.next_attempt_at = now, 0, None
        renewal.updated_at = now


def normalize_serial(text: str) -> str:
    cleaned = text.strip().lower().replace(":", "").removeprefix("0x").lstrip("0")
    return cleaned or "0"


def revoke(engine: sa.Engine, target: str, reason: str, now: dt.datetime) -> list[CertView]:
    """Revoke one certificate (by serial) or every usable one of a charger (by id)."""
    usable = (CERT_ISSUED, CERT_ACTIVE, CERT_SUPERSEDED)
    with session_scope(engine) as session:
        rows = list(session.exec(select(ChargerCertificate).where(
            ChargerCertificate.charger_id == target, ChargerCertificate.state.in_(usable))).all())  # type: ignore[attr-defined]
        if not rows and not session.exec(select(ChargerCertificate.id).where(
                ChargerCertificate.charger_id == target)).first():
            serial = normalize_serial(target)
            rows = list(session.exec(select(ChargerCertificate).where(
                ChargerCertificate.serial == serial, ChargerCertificate.state != CERT_REVOKED)).all())
        for row in rows:
            row.state, row.revoked_at, row.revoke_reason = CERT_REVOKED, now, reason
        return [view(row) for row in rows]


def certificates(engine: sa.Engine, charger_id: str | None = None) -> list[CertView]:
    with session_scope(engine) as session:
        query = select(ChargerCertificate).order_by(ChargerCertificate.charger_id, ChargerCertificate.id)
        if charger_id is not None:
            query = query.where(ChargerCertificate.charger_id == charger_id)
        return [view(row) for row in session.exec(query).all()]


def revoked(engine: sa.Engine, ca_fingerprint: str) -> list[tuple[str, dt.datetime]]:
    """(serial, revoked at) of the certificates `ca_fingerprint` issued that are revoked (CRL)."""
    with session_scope(engine) as session:
        rows = session.exec(select(ChargerCertificate.serial, ChargerCertificate.revoked_at).where(
            ChargerCertificate.ca_fingerprint == ca_fingerprint,
            ChargerCertificate.state == CERT_REVOKED)).all()
        return [(serial, at) for serial, at in rows if at is not None]


@dataclass(frozen=True)
class RenewalView:
    charger_id: str
    requested_at: dt.datetime | None
    attempts: int
    next_attempt_at: dt.datetime | None
    last_result: str | None
    alerted_serial: str | None
    move_pending: bool


_RENEWALS = ChargerCertRenewal.__table__  # type: ignore[attr-defined]
_CERTS = ChargerCertificate.__table__  # type: ignore[attr-defined]
# CertView's fields in order; certificates_of leaves the PEM out (the plan and the sweep never read it).
_VIEW_COLUMNS = [_CERTS.c[name] for name in CertView.__dataclass_fields__ if name != "cert_pem"]


def renewals(engine: sa.Engine, charger_ids: Sequence[str] | None = None) -> dict[str, RenewalView]:
    """Renewal state per charger (all, or these): Core reads, it runs at every look."""
    columns = [_RENEWALS.c[name] for name in RenewalView.__dataclass_fields__]
    found: dict[str, RenewalView] = {}
    with engine.connect() as conn:
        parts = [None] if charger_ids is None else list(chunks(list(charger_ids)))
        for part in parts:
            query = sa.select(*columns)
            if part is not None:
                query = query.where(_RENEWALS.c.charger_id.in_(part))
            found.update({row[0]: RenewalView(*row) for row in conn.execute(query)})
    return found


def certificates_of(engine: sa.Engine, charger_ids: Sequence[str]) -> dict[str, list[CertView]]:
    """Every certificate of these chargers, oldest first, without their PEM (chunked IN reads)."""
    found: dict[str, list[CertView]] = {}
    with engine.connect() as conn:
        for part in chunks(list(charger_ids)):
            query = sa.select(*_VIEW_COLUMNS).where(_CERTS.c.charger_id.in_(part)).order_by(_CERTS.c.id)
            for row in conn.execute(query):
                found.setdefault(row[0], []).append(CertView(*row, cert_pem=""))
    return found


def current(certs: Sequence[CertView]) -> CertView | None:
    """The charger's active certificate (the newest one if, oddly, several are)."""
    active = [c for c in certs if c.state == CERT_ACTIVE]
    return active[-1] if active else None


def mark_alerted(engine: sa.Engine, charger_id: str, serial: str, now: dt.datetime) -> None:
    with session_scope(engine) as session:
        renewal = _renewal(session, charger_id)
        renewal.alerted_serial, renewal.updated_at = serial, now


def charger_ids_with_certificates(engine: sa.Engine) -> list[str]:
    with session_scope(engine) as session:
        return list(session.exec(select(ChargerCertificate.charger_id).distinct()).all())


__all__ = ["CERT_REJECTED", "CertView", "Issued", "RenewalView"]
