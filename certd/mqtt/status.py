"""The MQTT line of `certd status` (and of a status page): what the daemon last wrote.

Read from the store only (`certd.store.mqtt.MqttConnection`): status runs in another
process than the daemon holding the connection. A row written by a daemon on this host
that is no longer running says so, instead of claiming a connection nobody holds.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass

import sqlalchemy as sa

from certd.config import Config
from certd.store.db import session_scope
from certd.store.mqtt import MQTT_CONNECTED, MQTT_STOPPED, MqttConnection

NOT_STARTED = "not started"


@dataclass(frozen=True)
class MqttStatus:
    node: str
    broker: str
    state: str
    since: dt.datetime
    last_error: str | None
    attempts: int
    daemon_gone: bool  # written by a process on this host that is not running any more

    def line(self) -> str:
        when = f"{self.since:%Y-%m-%d %H:%M} UTC"
        if self.state == NOT_STARTED:
            return f"MQTT: {self.broker}: no `certd run` has connected yet"
        if self.daemon_gone and self.state != MQTT_STOPPED:
            return f"MQTT: {self.broker}: no daemon running (last seen {self.state} since {when})"
        if self.state == MQTT_CONNECTED:
            return f"MQTT: connected to {self.broker} since {when}"
        if self.state == MQTT_STOPPED:
            return f"MQTT: {self.broker}: not connected (certd run stopped at {when})"
        text = f"MQTT: {self.state} ({self.broker}) since {when}"
        if self.attempts:
            text += f", {self.attempts} attempt(s), retrying with backoff"
        return text + (f": {self.last_error}" if self.last_error else "")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mqtt_status(config: Config, engine: sa.Engine) -> MqttStatus | None:
    """The connection state of this node's daemon; None when [mqtt] is not configured."""
    if not config.mqtt.active:
        return None
    node = config.mqtt.node(config.ocpp.node_name)
    with session_scope(engine) as session:
        row = session.get(MqttConnection, node)
    if row is None:
        return MqttStatus(node, config.mqtt.broker(), NOT_STARTED, dt.datetime.now(dt.timezone.utc), None, 0, True)
    gone = row.hostname == socket.gethostname() and not _alive(row.pid)
    return MqttStatus(node, row.broker, row.state, row.since, row.last_error, row.attempts, gone)
