"""The `[mqtt]` and `[homeassistant]` sections: one broker connection for the daemon.

```toml
[mqtt]
host = "broker.lan"          # unset: no MQTT at all
tls = true                   # port 8883 by default then
username = "certd"
password_file = "/etc/certd/mqtt-password"   # or password_env; never in this file
[homeassistant]
enabled = true               # certd's state as Home Assistant entities (MQTT discovery)
```
The connection serves Home Assistant discovery and `kind = "mqtt"` fleet registries
(`certd.config.trust.MqttRegistryConfig`); `mqtt_reference_errors` checks that both
find a broker (called by `certd.config.Config`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from certd.config._base import Section

DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883
_TOPIC_LEVEL = re.compile(r"^[^#+\s/][^#+\s]*$")  # no wildcards, no leading '/', no blanks
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def check_topic(value: str, what: str) -> str:
    """A topic prefix: levels without MQTT wildcards or blanks, no leading or trailing '/'."""
    if not _TOPIC_LEVEL.match(value) or value.endswith("/") or "//" in value:
        raise ValueError(f"{what} {value!r}: use topic levels like \"certd/fleet\" "
                         "(no '#', '+', spaces, empty levels or leading/trailing '/')")
    return value


class MqttConfig(Section):
    """Where the broker is and how certd logs in (the password from env or an owner-only file)."""

    enabled: bool = True
    host: str | None = None  # unset: certd opens no MQTT connection
    port: Annotated[int, Field(gt=0, lt=65536)] | None = None  # default 1883, 8883 with tls
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    tls: bool = False
    ca_file: str | None = None  # the broker's CA (default: the system store)
    client_cert: str | None = None  # optional client certificate (PEM) ...
    client_key: str | None = None  # ... and its key (default: in client_cert)
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    client_id: str | None = None  # default: "certd-<node>"
    # Names this node in topics, Home Assistant and the client id (default: [ocpp] node_name, else host name).
    node_name: str | None = None
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 60
    connect_timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    # Reconnect backoff: 1 s, 2 s, 4 s, ... up to this many seconds between attempts.
    reconnect_max: Annotated[float, Field(ge=1, le=3600)] = 60.0
    # How long the broker keeps certd's session (and queues acks for it) while certd is away.
    session_expiry: Annotated[int, Field(ge=0, le=30 * 86400)] = 7 * 86400
    # Availability and Home Assistant state topics: <base_topic>/<node>/...
    base_topic: str = "certd"
    # Incoming messages (device acks) waiting to be handled; more are dropped by the client.
    max_queued_incoming: Annotated[int, Field(ge=100, le=1_000_000)] = 20_000

    _base = field_validator("base_topic")(lambda cls, v: check_topic(v, "base_topic"))

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is not None and not _CLIENT_ID.match(value):
            raise ValueError(f"{value!r}: use 1-64 letters, digits, '_', '.', ':' or '-'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "MqttConfig":
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password needs a username")
        if (self.ca_file or self.client_cert or self.client_key) and not self.tls:
            raise ValueError("ca_file, client_cert and client_key need tls = true")
        if self.client_key and not self.client_cert:
            raise ValueError("client_key needs client_cert")
        return self

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.host)

    @property
    def broker_port(self) -> int:
        return self.port or (DEFAULT_TLS_PORT if self.tls else DEFAULT_PORT)

    def broker(self) -> str:
        """host:port for messages (never credentials)."""
        return f"{self.host}:{self.broker_port}" + (" (TLS)" if self.tls else "")

    def node(self, ocpp_node_name: str | None = None) -> str:
        return self.node_name or ocpp_node_name or socket.gethostname()

    def files(self) -> dict[str, str]:
        """Files a connection reads, by key (for `certd check-config`)."""
        keys = {"ca_file": self.ca_file, "client_cert": self.client_cert, "client_key": self.client_key,
                "password_file": self.password_file}
        return {key: path for key, path in keys.items() if path}


class HomeAssistantConfig(Section):
    """certd's state as Home Assistant entities through MQTT discovery."""

    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    # Where Home Assistant announces itself (`online` makes certd send its configs again).
    status_topic: str | None = None  # default: <discovery_prefix>/status
    device_name: str | None = None  # default: "certd on <node>"

    _prefix = field_validator("discovery_prefix")(lambda cls, v: check_topic(v, "discovery_prefix"))

    @field_validator("status_topic")
    @classmethod
    def _status(cls, value: str | None) -> str | None:
        return None if value is None else check_topic(value, "status_topic")

    @property
    def birth_topic(self) -> str:
        return self.status_topic or f"{self.discovery_prefix}/status"


def mqtt_reference_errors(mqtt: MqttConfig, homeassistant: HomeAssistantConfig,
                          registries: Iterable[object]) -> list[str]:
    """Problems between sections: what needs a broker has one, MQTT 5 features have MQTT 5."""
    errors = []
    if homeassistant.enabled and not mqtt.active:
        errors.append("homeassistant.enabled needs a broker: set [mqtt] host (and enabled = true)")
    for registry in registries:
        if getattr(registry, "kind", None) != "mqtt":
            continue
        name = getattr(registry, "name", "?")
        if not mqtt.active:
            errors.append(f"registry {name!r} (kind = \"mqtt\") needs a broker: set [mqtt] host")
        if getattr(registry, "signature", None) == "user_property" and mqtt.protocol != "5":
            errors.append(f"registry {name!r}: signature = \"user_property\" needs [mqtt] protocol = \"5\"")
    return errors
