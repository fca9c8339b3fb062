"""Rollover tables: what each OCPP listener serves while chargers learn new roots, and what each
charger confirmed holding.

A certd restart mid-rollout reads both back and goes on: chargers that
confirmed are not asked again, a pending listener keeps serving the previous
certificate until its gate opens or its deadline passes.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from certd.store.types import UTCDateTime, utcnow

# RolloverGate.state
GATE_IDLE = "idle"  # serving the current certificate; nothing waits
GATE_PENDING = "pending"  # a newer certificate waits for chargers to hold its roots
GATE_BLOCKED = "blocked"  # a newer certificate waits, but its roots cannot be worked out (see reason)

# RolloverCharger.state
CHARGER_CONFIRMED = "confirmed"  # holds every certificate of the listener's current bundle version
CHARGER_PENDING = "pending"  # lacks some; certd will (or is about to) install them
CHARGER_FAILED = "failed"  # the last attempt ended in a refusal or an error (see last_result)


def _ts(nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(UTCDateTime(), nullable=nullable)


class RolloverGate(SQLModel, table=True):
    """Per OCPP listener and certificate name: which issued certificate is served, which waits."""

    __tablename__ = "rollover_gate"

    listener: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    cert_name: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    bundle: str | None = None
    # What the listener serves; None = nothing issued yet (the current one is served).
    served_id: int | None = Field(default=None, foreign_key="issued_certificate.id")
    # A newer issuance waiting for the gate.
    pending_id: int | None = Field(default=None, foreign_key="issued_certificate.id")
    # The newest issuance the engine has looked at: a newer current one is held back until then.
    decided_id: int | None = Field(default=None, foreign_key="issued_certificate.id")
    state: str = GATE_IDLE
    # JSON list of {"subject", "spki_sha256"}: the roots chargers must hold for the pending one.
    required_json: str = Field(default="[]", sa_column=sa.Column(sa.Text, nullable=False))
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    gate_share: float = 1.0
    deadline_days: float = 7.0
    started_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    deadline_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    switched_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    # How the last switch happened: "no new roots", "gate reached ...", "deadline ..." ...
    switch_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    forced: bool = False  # the last switch happened at the deadline, not by the gate
    # JSON list of {"charger_id", "reason"} that lacked the roots at a forced switch.
    lacking_json: str = Field(default="[]", sa_column=sa.Column(sa.Text, nullable=False))
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class RolloverCharger(SQLModel, table=True):
    """Per charger: what it confirmed holding, how provisioning it went, its store limits."""

    __tablename__ = "rollover_charger"

    charger_id: str = Field(sa_column=sa.Column(sa.String(48), primary_key=True))
    listener: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), index=True))
    ocpp_version: str | None = None
    # JSON list of SHA-256 fingerprints of known CA certificates GetInstalledCertificateIds reported.
    held_json: str = Field(default="[]", sa_column=sa.Column(sa.Text, nullable=False))
    # Installed CSMS roots certd does not know (they count against the charger's store limit).
    other_held: int = 0
    # JSON object bundle name -> version number the charger holds in full.
    bundles_json: str = Field(default="{}", sa_column=sa.Column(sa.Text, nullable=False))
    confirmed_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    state: str = CHARGER_PENDING
    # Accepted | Rejected | Failed | NotSupported | timeout | error | offline | store-full |
    # needs-cross-sign | too-large
    last_result: str | None = None
    last_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    last_attempt_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    next_attempt_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    failures: int = 0  # attempts in a row that did not end confirmed
    installs_sent: int = 0  # InstallCertificate requests sent over the charger's lifetime
    # Limits read from the charger (None: it did not say).
    store_max: int | None = None
    store_used: int | None = None
    additional_root_check: bool | None = None
    facts_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
