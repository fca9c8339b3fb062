"""Core tables: the ACME account, issued certificates, attempts, challenge records.

One `ManagedCertificate` row per configured name holds what the scheduler needs
across restarts; every issuance is a separate `IssuedCertificate` row so that the
previous certificate stays available (rollback, rollover gating, re-deploy).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from certd.store.types import EncryptedText, UTCDateTime, utcnow


def _ts(nullable: bool = False, default: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(UTCDateTime(), nullable=nullable, default=utcnow if default else None)


class AcmeAccount(SQLModel, table=True):
    __tablename__ = "acme_account"

    id: int | None = Field(default=None, primary_key=True)
    directory_url: str = Field(sa_column=sa.Column(sa.String(512), unique=True, nullable=False))
    # Encrypted under the store key when one is configured (certd.store.sealing).
    key_pem: str = Field(sa_column=sa.Column(EncryptedText("acme_account.key_pem"), nullable=False),
                         repr=False)
    # The registration resource as JSON (acme RegistrationResource.json_dumps()); None until registered.
    registration_json: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    contact: str | None = None
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())


class IssuedCertificate(SQLModel, table=True):
    __tablename__ = "issued_certificate"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    domains: str  # comma-separated, in config order (first = CN)
    key_type: str
    serial: str  # hex
    not_before: dt.datetime = Field(sa_column=_ts())
    not_after: dt.datetime = Field(sa_column=_ts())
    issuer: str  # issuer CN of the leaf
    cert_pem: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    chain_pem: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    key_pem: str = Field(sa_column=sa.Column(EncryptedText("issued_certificate.key_pem"), nullable=False),
                         repr=False)  # never in a log line that prints the row
    # JSON list of SHA-256 fingerprints (hex) of the CA certificates in chain_pem, leaf-side first.
    chain_fingerprints: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    # JSON list of alternate chains offered by the CA (each a PEM string).
    alternate_chains: str = Field(default="[]", sa_column=sa.Column(sa.Text, nullable=False))
    profile: str | None = None
    directory_url: str
    issued_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())


class ManagedCertificate(SQLModel, table=True):
    """Per configured certificate: what is current and what the scheduler must remember."""

    __tablename__ = "managed_certificate"

    name: str = Field(primary_key=True)
    current_id: int | None = Field(default=None, foreign_key="issued_certificate.id")
    deployed_id: int | None = Field(default=None, foreign_key="issued_certificate.id")
    # Set when the last deploy's hooks failed: they are retried without re-issuing.
    hooks_pending: bool = False
    failure_count: int = 0
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    next_attempt_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    next_check_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    renew_reason: str | None = None
    renew_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    ari_checked_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())


class IssuanceAttempt(SQLModel, table=True):
    __tablename__ = "issuance_attempt"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    started_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())
    finished_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    outcome: str = "running"  # running | success | failure | abandoned
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    certificate_id: int | None = Field(default=None, foreign_key="issued_certificate.id")


class ChallengeRecord(SQLModel, table=True):
    """A TXT record certd is about to create or created; deleted after the attempt.

    The row is written before the API call, so a crash at any point leaves a
    row that the next start uses to find and delete the record.
    """

    __tablename__ = "challenge_record"

    id: int | None = Field(default=None, primary_key=True)
    attempt_id: int | None = Field(default=None, foreign_key="issuance_attempt.id")
    zone_id: str
    zone_name: str
    fqdn: str
    value: str  # the DNS-01 digest: public by design (it is published in DNS)
    record_id: str | None = None  # None until the provider answered the create
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())
    # The credential that wrote it (a `[[cloudflare.accounts]]` label; None: the only one), so the
    # record is deleted with the same token. `fqdn` is the name written: a delegated target.
    account: str | None = None
