"""Profile-3 connections in the store: look a client certificate up, note its first use, and
find the live connections a revocation, disable or removal ends.

Synchronous (worker threads). The revocation watch compares a cheap watermark of the
store (revoked certificates, disabled and total chargers) every
`revocation_check_interval` seconds and reads the connected chargers' rows only when it
moved, so thousands of idle connections cost one small query per interval.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlmodel import select

from certd.chargerca import authority
from certd.chargerca.csr import Standing
from certd.chargerca.identity import RETIRED_PASSWORD_HASH, PeerCertificate, StoredCertificate
from certd.chargerca.records import activate, chunks
from certd.store.charger_ca import CERT_ISSUED, CERT_REJECTED, CERT_REVOKED, ChargerCertificate
from certd.store.chargers import REGISTRATION_ACCEPTED, Charger
from certd.store.db import session_scope


def peer_certificate(der: bytes, certd_cas: Sequence[x509.Certificate]) -> PeerCertificate:
    """The facts of a verified client certificate (DER, as `getpeercert(True)` gives it)."""
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return PeerCertificate(
        common_name=str(names[0].value) if len(names) == 1 else None,
        serial=f"{cert.serial_number:x}",
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        not_after=cert.not_valid_after_utc,
        issued_by_certd=authority.issued_by(cert, certd_cas) is not None,
    )


@dataclass(frozen=True)
class PeerRecord:
    stored: StoredCertificate | None
    standing: Standing | None
    password_hash: str | None = None
    registration: str | None = None
    heartbeat_class: str | None = None
    first_use_unrecorded: bool = False  # certd's certificate, never seen on a connection before


_CERTS = ChargerCertificate.__table__  # type: ignore[attr-defined]
_CHARGERS = Charger.__table__  # type: ignore[attr-defined]
# Built once, Core not the ORM: they run for every profile-3 connection.
_CERT_BY_FINGERPRINT = sa.select(_CERTS.c.charger_id, _CERTS.c.state, _CERTS.c.not_after,
                                 _CERTS.c.first_used_at).where(_CERTS.c.fingerprint == sa.bindparam("fp"))
_CHARGER = sa.select(_CHARGERS.c.enabled, _CHARGERS.c.registration, _CHARGERS.c.password_hash,
                     _CHARGERS.c.heartbeat_class).where(_CHARGERS.c.charger_id == sa.bindparam("cid"))


def lookup(engine: sa.Engine, charger_id: str, fingerprint: str) -> PeerRecord:
    """The certificate row (by fingerprint) and the charger row: one trip per connection."""
    with engine.connect() as conn:
        cert = conn.execute(_CERT_BY_FINGERPRINT, {"fp": fingerprint}).first()
        charger = conn.execute(_CHARGER, {"cid": charger_id}).first()
    stored = StoredCertificate(cert[0], cert[1], cert[2]) if cert else None
    unrecorded = cert is not None and cert[3] is None
    if charger is None:
        return PeerRecord(stored, None, first_use_unrecorded=unrecorded)
    enabled, registration, password_hash, heartbeat_class = charger
    return PeerRecord(stored, Standing(bool(enabled), registration == REGISTRATION_ACCEPTED), password_hash,
                      registration, heartbeat_class, unrecorded)


def note_use(engine: sa.Engine, charger_id: str, fingerprint: str | None, now: dt.datetime, *,
             retire_password: bool) -> bool:
    """After a certificate admitted the charger: first use recorded (an `issued` certificate
    becomes the active one), and its password retired when asked. True if it was retired now."""
    with session_scope(engine) as session:
        if fingerprint is not None:
            row = session.exec(select(ChargerCertificate).where(
                ChargerCertificate.fingerprint == fingerprint)).first()
            if row is not None:
                if row.first_used_at is None:
                    row.first_used_at = now
                if row.state == CERT_ISSUED:
                    activate(session, row)
        if not retire_password:
            return False
        charger = session.get(Charger, charger_id)
        if charger is None or charger.password_hash in (None, RETIRED_PASSWORD_HASH):
            return False
        charger.password_hash, charger.updated_at = RETIRED_PASSWORD_HASH, now
        return True


Watermark = tuple[object, ...]


def watermark(engine: sa.Engine) -> Watermark:
    """Changes whenever a certificate is revoked or a charger is disabled, enabled or removed."""
    certs = ChargerCertificate.__table__  # type: ignore[attr-defined]
    chargers = Charger.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        revoked = conn.execute(sa.select(sa.func.count(), sa.func.max(certs.c.revoked_at)).where(
            certs.c.state.in_((CERT_REVOKED, CERT_REJECTED)))).one()
        disabled = conn.execute(sa.select(sa.func.count(), sa.func.max(chargers.c.updated_at)).where(
            chargers.c.enabled.is_(False))).one()
        total = conn.execute(sa.select(sa.func.count()).select_from(chargers)).scalar_one()
    return (tuple(revoked), tuple(disabled), total)


def refusals(engine: sa.Engine, connected: Mapping[str, str | None]) -> dict[str, str]:
    """charger id -> why its live certificate connection must close (charger id -> the
    fingerprint it connected with, None for a manufacturer certificate)."""
    ids = list(connected)
    found: dict[str, str] = {}
    fingerprints = [fp for fp in connected.values() if fp]
    with session_scope(engine) as session:
        states: dict[str, str] = {}
        for part in chunks(fingerprints):
            rows = session.exec(select(ChargerCertificate.fingerprint, ChargerCertificate.state).where(
                ChargerCertificate.fingerprint.in_(part))).all()  # type: ignore[attr-defined]
            states.update({fp: state for fp, state in rows})
        enabled: dict[str, bool] = {}
        for part in chunks(ids):
            rows = session.exec(select(Charger.charger_id, Charger.enabled).where(
                Charger.charger_id.in_(part))).all()  # type: ignore[attr-defined]
            enabled.update({cid: flag for cid, flag in rows})
    for charger_id, fp in connected.items():
        if charger_id not in enabled:
            found[charger_id] = "charger removed"
        elif not enabled[charger_id]:
            found[charger_id] = "charger disabled"
        elif fp is not None and states.get(fp) in (CERT_REVOKED, CERT_REJECTED):
            found[charger_id] = f"certificate {states[fp]}"
    return found
