"""MQTT tables: the daemon's broker connection as other processes see it, and device acks.

`certd status` (and a status page) run in other processes than the daemon that holds the
connection, so the daemon writes its connection state to a row per node. Every device's
last acknowledged bundle version lives here so `certd fleet devices` can say who is
current, behind or silent after a restart.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from certd.store.types import UTCDateTime, utcnow

# MqttConnection.state
MQTT_CONNECTING = "connecting"  # started, no session yet (or between attempts after a failure)
MQTT_CONNECTED = "connected"
MQTT_DISCONNECTED = "disconnected"  # lost or refused; retrying with backoff (see last_error)
MQTT_STOPPED = "stopped"  # the daemon stopped cleanly


def _ts(nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(UTCDateTime(), nullable=nullable)


class MqttConnection(SQLModel, table=True):
    """One row per node: the state of its daemon's broker connection (written on every change)."""

    __tablename__ = "mqtt_connection"

    node: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    broker: str  # host:port (TLS): never credentials
    state: str = MQTT_CONNECTING
    since: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    attempts: int = 0  # failed attempts since the last session
    last_connected_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    hostname: str | None = None  # where `pid` runs (a status on the same host checks it is alive)
    pid: int | None = None
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class MqttDeviceAck(SQLModel, table=True):
    """A device's last acknowledged version of one bundle, per MQTT registry."""

    __tablename__ = "mqtt_device_ack"
    __table_args__ = (
        sa.UniqueConstraint("registry_name", "bundle", "device_id", name="uq_mqtt_device_ack_device"),
    )

    id: int | None = Field(default=None, primary_key=True)
    registry_name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, index=True))
    bundle: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    device_id: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    flavour: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    version: int
    sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    acked_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    first_seen_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    acks: int = 1  # acknowledgements of a new version received from this device
