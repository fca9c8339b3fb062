"""The `mqtt` push target: each bundle version published retained, QoS 1, signed like HTTP's.

Topic `<topic_prefix>/bundles/<bundle>/<flavour>`; the payload is the outbox's exact JSON
body, signed with HMAC-SHA256 over those bytes (`certd.trust.http_registry.sign`):
- `signature = "envelope"` (MQTT 3.1.1 and 5): `{"body": "<the body as a string>",
  "idempotency_key": "...", "signature": "sha256=<hex>"}`;
- `signature = "user_property"` (MQTT 5): the body itself, with user properties
  `signature` and `idempotency-key`.
A delivery is done when the broker's PUBACK arrives. In the daemon it goes out on the
daemon's connection (`set_active`); while that connection is down the outbox keeps the
row and retries with backoff, and when it comes back the rows are sent at once
(`deliveries_due_now`). Elsewhere (`certd fleet push`, a hand-run `certd issue`) the
target opens a short connection of its own (no will, its own client id).

After each connect the daemon publishes again the newest delivered version of each
bundle flavour (`latest_delivered`): a broker without persistence forgets retained
messages, and a device connecting later must still find the current bundle.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from dataclasses import dataclass

import aiomqtt
import sqlalchemy as sa
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlmodel import select

from certd.config import Config
from certd.config.trust import MqttRegistryConfig
from certd.mqtt import names
from certd.mqtt.client import MqttConnection, NotConnected, describe_failure, open_client
from certd.secrets import read_secret
from certd.store.db import session_scope
from certd.store.trust import TrustBundleVersion, TrustDelivery
from certd.trust.http_registry import sign
from certd.trust.push import ACCEPTED, REJECTED, RETRY, PushMessage, PushOutcome

ENVELOPE_VERSION = 1
_ACTIVE: list[MqttConnection] = []  # the daemon's connection in this process (at most one)
_PUBLISHED = [0]  # bundle versions this process put on a broker: acks for them may follow


def publications() -> int:
    """How many bundle versions this process published so far (acks.VersionIndex reads it)."""
    return _PUBLISHED[0]


def _published() -> None:
    _PUBLISHED[0] += 1


def set_active(connection: MqttConnection | None) -> None:
    """The connection deliveries in this process go out on (None: open one per delivery)."""
    _ACTIVE[:] = [connection] if connection is not None else []


def active() -> MqttConnection | None:
    return _ACTIVE[0] if _ACTIVE else None


@dataclass(frozen=True)
class SignedPublish:
    topic: str
    payload: bytes
    properties: Properties | None


def signed(registry: MqttRegistryConfig, body: bytes, idempotency_key: str, secret: str) -> SignedPublish:
    """What goes on the broker for one delivery body (the topic comes from the body)."""
    document = json.loads(body)
    topic = names.bundle_topic(registry.topic_prefix, str(document["bundle"]), str(document["flavour"]))
    signature = sign(secret, body)
    if registry.signature == "user_property":
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = [("signature", signature), ("idempotency-key", idempotency_key)]
        properties.ContentType = "application/json"
        return SignedPublish(topic, body, properties)
    envelope = {"certd_envelope": ENVELOPE_VERSION, "body": body.decode("utf-8"),
                "idempotency_key": idempotency_key, "signature": signature}
    return SignedPublish(topic, json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode(), None)


def _secret(registry: MqttRegistryConfig) -> str:
    secret = read_secret(env=registry.hmac_secret_env, file=registry.hmac_secret_file,
                         what=f"HMAC secret of registry {registry.name}")
    assert secret is not None
    return secret


def publish_once(registry: MqttRegistryConfig, message: SignedPublish) -> PushOutcome:
    """Outside the daemon: connect, publish, wait for the PUBACK, disconnect."""
    settings = registry.broker
    if settings is None or not settings.active:
        return PushOutcome(RETRY, None, f"registry {registry.name}: no broker ([mqtt] host is not set)")
    node = settings.node()
    client_id = f"{settings.client_id or names.default_client_id(node)}-push-{os.getpid()}"[:64]
    password: list[str | None] = [None]

    async def run() -> None:
        client, password[0] = await open_client(settings, node, client_id=client_id, will=False,
                                                persistent=False)
        async with client:
            await client.publish(message.topic, message.payload, qos=1, retain=True,
                                 properties=message.properties, timeout=registry.timeout)

    try:
        asyncio.run(run())
    except Exception as exc:  # noqa: BLE001 - every failure is a retry that names the cause
        return PushOutcome(RETRY, None, describe_failure(exc, settings, password[0]))
    _published()
    return PushOutcome(ACCEPTED, None, f"PUBACK from broker {settings.broker()} on {message.topic}")


class MqttRegistryTarget:
    """`kind = "mqtt"`: each delivery is one retained QoS 1 publish, done at the PUBACK."""

    def __init__(self, registry: MqttRegistryConfig) -> None:
        self.registry = registry

    def deliver(self, message: PushMessage) -> PushOutcome:
        registry = self.registry
        try:
            publish = signed(registry, message.body, message.idempotency_key, _secret(registry))
        except (ValueError, KeyError, TypeError):
            return PushOutcome(REJECTED, None, "the delivery body is not a bundle document (no bundle/flavour)")
        connection = active()
        if connection is None:
            return publish_once(registry, publish)
        try:
            connection.publish_from_thread(publish.topic, publish.payload, properties=publish.properties,
                                           timeout=registry.timeout)
        except NotConnected as exc:
            return PushOutcome(RETRY, None, f"broker {connection.settings.broker()} not connected: {exc}")
        except aiomqtt.MqttError as exc:
            return PushOutcome(RETRY, None, f"broker {connection.settings.broker()}: {exc or type(exc).__name__}")
        _published()
        return PushOutcome(ACCEPTED, None, f"PUBACK from broker {connection.settings.broker()} on {publish.topic}")


def mqtt_registries(config: Config) -> list[MqttRegistryConfig]:
    return [r for r in config.trust.registries if isinstance(r, MqttRegistryConfig)]


def latest_delivered(config: Config, engine: sa.Engine) -> list[SignedPublish]:
    """The newest delivered version per MQTT registry, bundle and flavour, signed again (thread)."""
    result = []
    with session_scope(engine) as session:
        for registry in mqtt_registries(config):
            rows = session.exec(select(TrustDelivery, TrustBundleVersion).join(
                TrustBundleVersion, TrustBundleVersion.id == TrustDelivery.version_id).where(
                TrustDelivery.registry_name == registry.name, TrustDelivery.state == "delivered")
                .order_by(TrustBundleVersion.seq.desc())).all()  # type: ignore[attr-defined]
            newest: dict[tuple[str, str], TrustDelivery] = {}
            for delivery, version in rows:
                newest.setdefault((version.bundle, version.flavour), delivery)
            if newest:
                secret = _secret(registry)
                result += [signed(registry, d.body.encode(), d.idempotency_key, secret) for d in newest.values()]
    return result


def deliveries_due_now(config: Config, engine: sa.Engine, now: dt.datetime) -> list[int]:
    """Pending rows of MQTT registries, made due now (the broker is back: no reason to wait)."""
    registries = [r.name for r in mqtt_registries(config)]
    if not registries:
        return []
    table = TrustDelivery.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        session.execute(sa.update(table).where(
            table.c.state == "pending", table.c.registry_name.in_(registries), table.c.next_attempt_at > now,
            sa.or_(table.c.lease_until.is_(None), table.c.lease_until <= now)).values(next_attempt_at=now))
        return [row[0] for row in session.execute(sa.select(table.c.id).where(
            table.c.state == "pending", table.c.registry_name.in_(registries)).order_by(table.c.id))]
