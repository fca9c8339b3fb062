"""The daemon's MQTT part: one connection, Home Assistant entities, MQTT registries' acks.

    mqtt = MqttService(engine, clock, ocpp=lambda: daemon.ocpp)
    await mqtt.start(config)      # nothing when [mqtt] has no host
    mqtt.state_changed()          # after a check, a deploy, a job, a reload
    await mqtt.apply(old, new)    # SIGHUP
    await mqtt.close()

States are published when they change, not on a timer: `state_changed()` (the daemon
calls it after each check, deploy elsewhere, periodic job and reload; chargers
connecting and leaving call it through an OCPP charger hook) takes a new snapshot after
`COALESCE` seconds (a burst makes one snapshot) and publishes only the topics whose
payload changed. Values that move with time alone (days left, a renewal coming due)
schedule the next snapshot for the moment they change (`Snapshot.next_change_at`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiomqtt
import sqlalchemy as sa

from certd.config import Config
from certd.errors import CertdError
from certd.mqtt import homeassistant as ha
from certd.mqtt import names, push
from certd.mqtt.acks import AckRecorder
from certd.mqtt.client import ConnectionState, MqttConnection, NotConnected, process_identity
from certd.mqtt.publisher import RetainedPublisher
from certd.mqtt.snapshot import LiveListener, Snapshot, take_snapshot
from certd.store.db import session_scope
from certd.store.mqtt import MqttConnection as ConnectionRow
from certd.store.types import utcnow

if TYPE_CHECKING:
    from certd.ocpp.service import OcppService
    from certd.ocpp.session import ChargerSession

log = logging.getLogger("certd.mqtt")

COALESCE = 0.2  # seconds: changes within this window make one snapshot
MAX_TIMER = 86400.0


def record_state(engine: sa.Engine, node: str, broker: str, state: ConnectionState) -> None:
    """The connection state as `certd status` reads it (worker thread)."""
    hostname, pid = process_identity()
    with session_scope(engine) as session:
        row = session.get(ConnectionRow, node) or ConnectionRow(node=node, broker=broker)
        row.broker, row.state, row.since, row.last_error = broker, state.state, state.since, state.error
        row.attempts, row.last_connected_at = state.attempts, state.last_connected_at
        row.hostname, row.pid, row.updated_at = hostname, pid, utcnow()
        session.add(row)


def _restart_needed(old: Config, new: Config) -> bool:
    return (old.mqtt != new.mqtt or old.homeassistant != new.homeassistant
            or old.ocpp.node_name != new.ocpp.node_name
            or push.mqtt_registries(old) != push.mqtt_registries(new))


class MqttService:
    def __init__(self, engine: sa.Engine, clock: Callable[[], dt.datetime] = utcnow,
                 ocpp: Callable[[], OcppService | None] = lambda: None) -> None:
        self._engine = engine
        self._clock = clock
        self._ocpp = ocpp
        self.config: Config | None = None
        self.connection: MqttConnection | None = None
        self.acks = AckRecorder(engine, clock)
        self.publisher = RetainedPublisher()
        self.snapshot: Snapshot | None = None
        self._ha: ha.HaSettings | None = None
        self._owned: ha.HaSettings | None = None  # whose leftovers are emptied (HA on or off)
        self._changed = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._hooked: OcppService | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.snapshots = 0  # taken so far (tests, bench)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, config: Config) -> None:
        self.config = config
        if not config.mqtt.active:
            return
        node = config.mqtt.node(config.ocpp.node_name)
        self._owned = ha.HaSettings(config.homeassistant.discovery_prefix, config.mqtt.base_topic, node,
                                    config.homeassistant.device_name)
        self._ha = self._owned if config.homeassistant.enabled else None
        self.publisher = RetainedPublisher(keep=frozenset({self._owned.availability_topic}))
        self.acks = AckRecorder(self._engine, self._clock, push.publications)
        broker = config.mqtt.broker()
        self.connection = MqttConnection(
            config.mqtt, node, subscriptions=self._subscriptions, on_connected=self._on_connected,
            on_message=self._on_message, on_ready=self._on_ready,
            on_state=lambda state: record_state(self._engine, node, broker, state), clock=self._clock)
        push.set_active(self.connection)
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(), name="certd-mqtt-states")
        await self.connection.start()
        self.state_changed()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._hooked is not None:
            self._hooked.remove_charger_hook(self._charger_event)
            self._hooked = None
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.connection is not None:
            await self.connection.close()
            push.set_active(None)
            self.connection = None
        await self.acks.close()

    async def apply(self, old: Config, new: Config) -> None:
        """After a reload: a new connection when its settings changed, else new entities only."""
        if self.connection is None or _restart_needed(old, new):
            await self.close()
            await self.start(new)
            return
        self.config = new
        self.acks.index.invalidate()
        self.state_changed()

    @property
    def ready(self) -> bool:
        return self.connection is not None and self.connection.ready

    # -- state changes ---------------------------------------------------------------------------
    def state_changed(self) -> None:
        """Something certd shows may have changed: snapshot soon, publish what differs."""
        if self.connection is not None:
            self._changed.set()

    def _charger_event(self, session: ChargerSession, event: str) -> None:
        if event in ("connected", "disconnected"):
            self.state_changed()

    def _hook_chargers(self) -> None:
        endpoint = self._ocpp()
        if endpoint is self._hooked:
            return
        if self._hooked is not None:
            self._hooked.remove_charger_hook(self._charger_event)
        if endpoint is not None:
            endpoint.add_charger_hook(self._charger_event)
        self._hooked = endpoint

    def _live(self) -> tuple[dict[str, LiveListener], set[str]]:
        endpoint = self._ocpp()
        if endpoint is None:
            return {}, set()
        chargers = endpoint.connected_chargers()
        live = {}
        for listener in endpoint.listeners:
            served = endpoint.served(listener.label)
            live[listener.label] = LiveListener(sum(1 for c in chargers if c.listener == listener.label),
                                                tuple(s.not_after for s in served), tuple(s.serial for s in served))
        return live, {c.charger_id for c in chargers}

    async def _refresh_loop(self) -> None:
        while True:
            await self._changed.wait()
            await asyncio.sleep(COALESCE)
            self._changed.clear()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next change tries again
                log.exception("MQTT: could not publish certd's state")

    async def refresh(self) -> None:
        """Snapshot now and publish the differences (when connected)."""
        await self._take_snapshot()
        if self.ready:
            await self._sync(during_connect=False)

    async def _take_snapshot(self) -> None:
        config, connection = self.config, self.connection
        assert config is not None and connection is not None
        self._hook_chargers()
        live, live_ids = self._live()
        previous = self.snapshot
        snapshot = await asyncio.to_thread(take_snapshot, config, self._engine, connection.node,
                                           self._clock(), live, live_ids)
        self.snapshot, self.snapshots = snapshot, self.snapshots + 1
        if previous is None or previous.bundles != snapshot.bundles:
            self.acks.index.invalidate()
        for note in set(snapshot.notes) - set(previous.notes if previous else ()):
            log.warning("MQTT: %s", note)
        if self._ha is not None:
            wanted = ha.discovery(snapshot, self._ha)
            self.publisher.want(wanted.configs, wanted.states)
        else:
            self.publisher.want({}, {})  # entities a previous run announced are removed
        self._schedule_timer(snapshot.next_change_at)

    def _schedule_timer(self, when: dt.datetime | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            delay = min(max((when - self._clock()).total_seconds(), 0.5), MAX_TIMER)
            self._timer = asyncio.get_running_loop().call_later(delay, self.state_changed)

    async def _sync(self, *, during_connect: bool) -> None:
        connection = self.connection
        assert connection is not None

        async def publish(topic: str, payload: str) -> None:
            await connection.publish(topic, payload, qos=1, retain=True, during_connect=during_connect)

        async with self._sync_lock:
            try:
                sent = await self.publisher.sync(publish)
            except (aiomqtt.MqttError, NotConnected) as exc:
                log.info("MQTT: state not published (%s); it is sent again after the reconnect", exc)
                return
        if sent:
            log.debug("MQTT: published %d retained topic(s)", sent)

    # -- connection callbacks --------------------------------------------------------------------
    def _subscriptions(self) -> list[str]:
        config = self.config
        assert config is not None and self._owned is not None
        topics = [ha.owned_config_filter(self._owned), ha.owned_state_filter(self._owned)]
        if self._ha is not None:
            topics.append(config.homeassistant.birth_topic)
        topics += sorted({names.ack_filter(r.topic_prefix) for r in push.mqtt_registries(config)})
        return topics

    async def _on_connected(self) -> None:
        """A new session: everything retained is sent again from the current state."""
        assert self.config is not None and self.connection is not None
        self.publisher.forget()
        await self._take_snapshot()
        try:
            republish = await asyncio.to_thread(push.latest_delivered, self.config, self._engine)
        except CertdError as exc:  # an unreadable HMAC secret must not keep the session down
            log.warning("MQTT: bundle versions not published again after the connect: %s", exc)
            republish = []
        for message in republish:
            await self.connection.publish(message.topic, message.payload, properties=message.properties,
                                          during_connect=True)
        await self.acks.index.refresh()
        await self._sync(during_connect=True)

    def _on_ready(self) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver_pending(), name="certd-mqtt-outbox")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_pending(self) -> None:
        """The broker is back: pending MQTT deliveries go now, not at their backoff time."""
        from certd.trust import outbox

        config = self.config
        assert config is not None
        try:
            ids = await asyncio.to_thread(push.deliveries_due_now, config, self._engine, self._clock())
            if ids:
                await asyncio.to_thread(outbox.deliver, config, self._engine, now=self._clock(), ids=ids)
                self.state_changed()
        except Exception as exc:  # noqa: BLE001 - the outbox job tries again in a minute
            log.warning("MQTT: pending registry deliveries not sent now: %s", type(exc).__name__)

    async def _on_message(self, message: aiomqtt.Message) -> None:
        config, topic, payload = self.config, str(message.topic), message.payload
        assert config is not None and self._owned is not None
        if not isinstance(payload, bytes):
            payload = str(payload).encode() if payload is not None else b""
        if self._ha is not None and topic == config.homeassistant.birth_topic:
            if payload.strip() == b"online":
                log.info("MQTT: Home Assistant is online: sending the discovery configs again")
                self.publisher.resend_configs()
                await self._sync(during_connect=False)
            return
        if message.topic.matches(ha.owned_config_filter(self._owned)) or \
                message.topic.matches(ha.owned_state_filter(self._owned)):
            self.publisher.seen(topic, payload)
            if self.publisher.pending():
                self._changed.set()
            return
        for registry in push.mqtt_registries(config):
            if message.topic.matches(names.ack_filter(registry.topic_prefix)):
                bundles = set(registry.bundles or [b.name for b in config.trust.bundles])
                await self.acks.handle(registry, bundles, topic, payload)
                return
