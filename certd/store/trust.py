"""Trust tables: CA certificates seen, chains per issuance, bundle versions, registry outbox.

Everything a restart must not lose about fleet bundles lives here: which CA
certificates each issuance used (per anchor set), every bundle version with
its content and diff, and each delivery to a registry with all its attempts.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from certd.store.types import UTCDateTime, utcnow


def _ts(nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(UTCDateTime(), nullable=nullable)


class TrustCaCertificate(SQLModel, table=True):
    """A CA certificate seen in any chain or taken from an anchor set (keyed by fingerprint)."""

    __tablename__ = "trust_ca_certificate"

    fingerprint: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    subject: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    issuer: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    spki_sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    not_before: dt.datetime = Field(sa_column=_ts())
    not_after: dt.datetime = Field(sa_column=_ts())
    self_signed: bool = False
    pem: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    first_seen_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())


class TrustChainLink(SQLModel, table=True):
    """One CA certificate of one chain of one issuance, resolved against one anchor set."""

    __tablename__ = "trust_chain_link"
    __table_args__ = (
        sa.UniqueConstraint("issued_id", "anchor_set", "chain_index", "position",
                            name="uq_trust_chain_link_position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    issued_id: int = Field(foreign_key="issued_certificate.id", index=True)
    anchor_set: str
    chain_index: int  # 0 = the chain served, 1.. = alternates the CA offered
    position: int  # 0 = next to the leaf
    fingerprint: str = Field(sa_column=sa.Column(
        sa.String(64), sa.ForeignKey("trust_ca_certificate.fingerprint"), nullable=False))
    role: str  # intermediate | cross-sign | root
    served: bool  # sent by the CA (False: the anchor from the anchor set)
    in_path: bool  # on the path from the leaf to the anchor
    recorded_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())


class TrustBundleVersion(SQLModel, table=True):
    """One version of one bundle flavour: content, manifest, diff against the previous one."""

    __tablename__ = "trust_bundle_version"
    __table_args__ = (
        sa.UniqueConstraint("bundle", "flavour", "seq", name="uq_trust_bundle_version_seq"),
    )

    id: int | None = Field(default=None, primary_key=True)
    bundle: str = Field(index=True)
    flavour: str
    seq: int  # the version number: 1, 2, 3 ...
    sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    previous_seq: int | None = None
    previous_sha256: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    pem: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    manifest_json: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    diff_json: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    notes_json: str = Field(default="[]", sa_column=sa.Column(sa.Text, nullable=False))
    reason: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())


class TrustDelivery(SQLModel, table=True):
    """An outbox entry: one bundle version for one registry, retried until a 2xx."""

    __tablename__ = "trust_delivery"
    __table_args__ = (
        sa.UniqueConstraint("registry_name", "idempotency_key", name="uq_trust_delivery_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    registry_name: str = Field(index=True)
    version_id: int = Field(foreign_key="trust_bundle_version.id")
    idempotency_key: str
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))  # exact bytes signed and sent
    state: str = "pending"  # pending | delivered | rejected
    attempts: int = 0
    next_attempt_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())
    # A sender holds the row until then (several processes may drive the outbox).
    lease_until: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_status: int | None = None
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())
    delivered_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class TrustDeliveryAttempt(SQLModel, table=True):
    """One POST of a delivery and what came back."""

    __tablename__ = "trust_delivery_attempt"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="trust_delivery.id", index=True)
    started_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())
    finished_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    status_code: int | None = None
    outcome: str = "sending"  # sending | accepted | retry | rejected
    detail: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
