"""Charger CA tables: the CA certificates, every charger certificate, every CSR, renewal state.

`ChargerCaCert.key_sealed` holds the CA key only when `[ocpp.charger_ca] key_storage =
"store"`, encrypted (AES-256-GCM, nonce first, the certificate's fingerprint as associated
data) under a key that never enters the store; with `"file"` only the key file's path is
kept. An offline root of a two-level hierarchy has no key here at all.

Certificate states: `issued` (sent, not yet accepted by the charger), `active` (the charger
accepted it, or connected with it), `superseded` (a newer one became active; still accepted
until it expires), `revoked`, `rejected` (the charger refused it).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from certd.store.types import UTCDateTime, utcnow

CA_ACTIVE = "active"
CA_RETIRED = "retired"  # replaced: still trusted for the certificates it issued

CERT_ISSUED = "issued"
CERT_ACTIVE = "active"
CERT_SUPERSEDED = "superseded"
CERT_REVOKED = "revoked"
CERT_REJECTED = "rejected"

DELIVERY_PENDING = "pending"
DELIVERY_ACCEPTED = "accepted"
DELIVERY_REJECTED = "rejected"
DELIVERY_NONE = "none"  # handed out as a file (provisioning kit), not over OCPP


def _ts(nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(UTCDateTime(), nullable=nullable)


class ChargerCaCert(SQLModel, table=True):
    """One CA certificate of the charger hierarchy (the issuing CA, and its root when two-level)."""

    __tablename__ = "charger_ca_cert"

    id: int | None = Field(default=None, primary_key=True)
    role: str  # issuing | root
    state: str = CA_ACTIVE  # active | retired
    fingerprint: str = Field(sa_column=sa.Column(sa.String(64), unique=True, nullable=False))
    parent_fingerprint: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    subject: str
    cert_pem: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    not_after: dt.datetime = Field(sa_column=_ts(nullable=False))
    key_storage: str  # file | store | offline
    key_path: str | None = None
    key_sealed: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary))
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class ChargerCertificate(SQLModel, table=True):
    """A certificate certd issued to a charger."""

    __tablename__ = "charger_certificate"

    id: int | None = Field(default=None, primary_key=True)
    charger_id: str = Field(sa_column=sa.Column(sa.String(48), index=True, nullable=False))
    serial: str = Field(sa_column=sa.Column(sa.String(48), unique=True, nullable=False))  # hex
    fingerprint: str = Field(sa_column=sa.Column(sa.String(64), unique=True, nullable=False))
    ca_fingerprint: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    key_type: str
    not_before: dt.datetime = Field(sa_column=_ts(nullable=False))
    not_after: dt.datetime = Field(sa_column=_ts(nullable=False))
    state: str = CERT_ISSUED
    source: str = "csr"  # csr | kit
    delivery: str = DELIVERY_PENDING  # pending | accepted | rejected | none
    delivery_attempts: int = 0
    next_delivery_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    delivery_detail: str | None = None
    cert_pem: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    issued_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    first_used_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    revoked_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    revoke_reason: str | None = None


class ChargerCsrRequest(SQLModel, table=True):
    """One SignCertificate a charger sent, and certd's decision."""

    __tablename__ = "charger_csr_request"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    charger_id: str = Field(sa_column=sa.Column(sa.String(48), index=True, nullable=False))
    listener: str | None = None
    ocpp_version: str | None = None
    csr_sha256: str | None = None
    key_type: str | None = None
    decision: str  # accepted | refused
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    serial: str | None = None  # of the certificate issued for it


class ChargerCertRenewal(SQLModel, table=True):
    """Per charger: asked-for renewals, trigger attempts and their back-off, alerts sent."""

    __tablename__ = "charger_cert_renewal"

    charger_id: str = Field(sa_column=sa.Column(sa.String(48), primary_key=True))
    requested_at: dt.datetime | None = Field(default=None, sa_column=_ts())  # `renew-cert`
    attempts: int = 0
    next_attempt_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    last_attempt_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    last_result: str | None = None
    alerted_serial: str | None = None  # the certificate a last-tenth alert was sent for
    move_pending: bool = False  # send the profile 2 -> 3 move after the next accepted certificate
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
