"""Charger registry tables: who may connect, what they told us, whether they are online.

`Charger.password_hash` is an argon2id hash string; the password itself is
never stored. `connected_node` names the certd process holding the charger's
socket (None = offline), so a node that restarts clears only its own rows.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from certd.store.types import UTCDateTime, utcnow

# Registration states; `pending` = auto-registered under policy "register", awaiting approval.
REGISTRATION_ACCEPTED = "accepted"
REGISTRATION_PENDING = "pending"


def _ts(nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(UTCDateTime(), nullable=nullable)


class Charger(SQLModel, table=True):
    __tablename__ = "charger"

    # OCPP identity (2.0.1 identifierString, at most 48 characters).
    charger_id: str = Field(sa_column=sa.Column(sa.String(48), primary_key=True))
    enabled: bool = True
    registration: str = REGISTRATION_ACCEPTED  # accepted | pending
    password_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(256)))
    heartbeat_class: str = "default"
    ocpp_version: str | None = None  # subprotocol seen at the last connection
    vendor: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    serial_number: str | None = None
    first_seen: dt.datetime | None = Field(default=None, sa_column=_ts())
    last_seen: dt.datetime | None = Field(default=None, sa_column=_ts())
    connected_node: str | None = None
    connected_since: dt.datetime | None = Field(default=None, sa_column=_ts())
    last_address: str | None = None
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class ChargerAuditEvent(SQLModel, table=True):
    """Security-relevant events: failed logins, refused ids, SecurityEventNotification."""

    __tablename__ = "charger_audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    charger_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), index=True))
    address: str | None = None
    kind: str  # auth_failed | rate_limited | security_event | registered
    detail: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
