"""The daemon's one broker connection: connect, reconnect with backoff, birth and will.

    connection = MqttConnection(settings, node, subscriptions=..., on_connected=..., on_message=...)
    await connection.start()     # returns at once; connects in the background, forever
    await connection.publish(topic, payload)          # on the loop; raises when not connected
    connection.publish_from_thread(topic, payload)    # from a worker thread (outbox deliveries)
    await connection.close()     # `offline` (retained), then a clean DISCONNECT: no will

The broker keeps a last will, `offline` retained on the availability topic, and publishes
it when certd dies or drops off the network; certd publishes `online` (retained) after
every connect. Nothing waits in the client while the broker is away: the service
republishes retained state from the current state after each connect, and outbox
deliveries stay in the store until a PUBACK (certd.mqtt.push). The session is
persistent (`session_expiry`), so the broker queues device acks while certd is away.

Built on aiomqtt (asyncio over paho-mqtt 2: MQTT 3.1.1 and 5); no protocol code here.
Every change of the connection state goes to `on_state` (the service writes it to the
store for `certd status`) and to the log; failures are named (refused login, TLS,
unreachable) and never carry the password.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from certd.config.mqtt import MqttConfig
from certd.errors import CertdError
from certd.mqtt import names
from certd.mqtt.names import printable
from certd.secrets import read_secret
from certd.store.mqtt import MQTT_CONNECTED, MQTT_CONNECTING, MQTT_DISCONNECTED, MQTT_STOPPED
from certd.store.types import utcnow

log = logging.getLogger("certd.mqtt")
# paho's own packet log (DEBUG only): topics carry device ids, escaped by the filter below.
protocol_log = logging.getLogger("certd.mqtt.protocol")

ONLINE, OFFLINE = "online", "offline"
LOG_AGAIN_EVERY = 10  # an unchanged connect failure is logged at warning level every N attempts
CLOSE_TIMEOUT = 3.0
PENDING_CALLS_WARNING = 1000


class _EscapeArgs(logging.Filter):
    """paho logs received topics as they came: control characters are escaped (no forged lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(printable(a) if isinstance(a, (str, bytes)) else a for a in record.args)
        return True


protocol_log.addFilter(_EscapeArgs())


class MqttSetupError(CertdError):
    """The connection cannot even be attempted: an unreadable CA file, key or password."""


class NotConnected(CertdError):
    """No session with the broker right now (the reason names the last failure)."""


@dataclass(frozen=True)
class ConnectionState:
    state: str  # connecting | connected | disconnected | stopped (certd.store.mqtt)
    since: dt.datetime
    error: str | None = None
    attempts: int = 0  # failed attempts since the last session
    last_connected_at: dt.datetime | None = None


def reconnect_delay(attempts: int, cap: float) -> float:
    """Pure backoff between attempts: 1 s, 2 s, 4 s, ... capped at `cap`."""
    return float(min(cap, 2.0 ** min(max(attempts - 1, 0), 16)))


def describe_failure(exc: BaseException, settings: MqttConfig, password: str | None = None) -> str:
    """Why a connect failed or a session ended, in words that name the cause (pure).

    The password never appears: paho and ssl never quote it, and it is masked anyway.
    """
    where = f"broker {settings.broker()}"
    if isinstance(exc, MqttSetupError):
        text = str(exc)
    elif isinstance(exc, MqttConnectError):
        code = getattr(exc.rc, "value", exc.rc)
        user = f"user {settings.username!r}" if settings.username else "no username set"
        if code in (4, 134):
            text = f"{where} refused the login: bad username or password ({user})"
        elif code in (5, 135):  # Mosquitto's answer to a wrong password in MQTT 3.1.1 too
            text = f"{where} refused the login: not authorized: wrong username or password, or no access ({user})"
        else:
            text = f"{where} refused the connection: {exc}"
    else:
        detail = str(exc) or type(exc).__name__
        lowered = detail.lower()
        if any(word in lowered for word in ("ssl", "certificate", "tls", "hostname mismatch", "handshake")):
            text = f"TLS with {where} failed: {detail}"
        elif "refused" in lowered:
            text = f"{where} refused the TCP connection (is it running, is the port right?): {detail}"
        elif "timed out" in lowered or "timeout" in lowered:
            text = f"no answer from {where} in time: {detail}"
        elif "name or service not known" in lowered or "nodename nor servname" in lowered:
            text = f"cannot resolve {settings.host!r}: {detail}"
        elif isinstance(exc, aiomqtt.MqttError):
            text = f"connection to {where} lost or failed: {detail}"
        else:
            text = f"connection to {where} failed: {type(exc).__name__}: {detail}"
    if password:
        text = text.replace(password, "***")
    return text


def tls_context(settings: MqttConfig) -> ssl.SSLContext:
    """The client TLS context (worker thread: reads files); unreadable files are named."""
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (ssl.SSLError, OSError) as exc:
        why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise MqttSetupError(f"[mqtt] cannot load ca_file {settings.ca_file}: {why}") from None
    if settings.client_cert:
        try:
            context.load_cert_chain(settings.client_cert, settings.client_key)
        except (ssl.SSLError, OSError) as exc:
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            raise MqttSetupError(f"[mqtt] cannot load client_cert {settings.client_cert}"
                                 f"{' / client_key ' + settings.client_key if settings.client_key else ''}: "
                                 f"{why}") from None
    return context


def read_password(settings: MqttConfig) -> str | None:
    """The broker password (worker thread), None when certd logs in without one."""
    if not (settings.password_env or settings.password_file):
        return None
    try:
        return read_secret(env=settings.password_env, file=settings.password_file, what="[mqtt] password")
    except CertdError as exc:
        raise MqttSetupError(str(exc)) from None


def client_options(settings: MqttConfig, node: str, *, client_id: str | None = None,
                   will: bool = True, persistent: bool = True) -> dict[str, Any]:
    """aiomqtt.Client keyword arguments for `settings` (no secrets, no files read)."""
    v5 = settings.protocol == "5"
    keep_session = persistent and settings.session_expiry > 0
    options: dict[str, Any] = dict(
        hostname=settings.host, port=settings.broker_port, username=settings.username,
        identifier=client_id or settings.client_id or names.default_client_id(node),
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        keepalive=settings.keepalive, timeout=settings.connect_timeout, logger=protocol_log,
        max_queued_incoming_messages=settings.max_queued_incoming,
    )
    if will:
        options["will"] = aiomqtt.Will(names.availability_topic(settings.base_topic, node), OFFLINE,
                                       qos=1, retain=True)
    if v5:
        options["clean_start"] = not keep_session
        if keep_session:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = settings.session_expiry
            options["properties"] = properties
    else:
        options["clean_session"] = not keep_session
    return options


async def open_client(settings: MqttConfig, node: str, **kwargs: Any) -> tuple[aiomqtt.Client, str | None]:
    """A client ready to enter (`async with`), and the password (for masking); files read in a thread."""
    password = await asyncio.to_thread(read_password, settings)
    context = await asyncio.to_thread(tls_context, settings) if settings.tls else None
    client = aiomqtt.Client(password=password, tls_context=context, **client_options(settings, node, **kwargs))
    client.pending_calls_threshold = PENDING_CALLS_WARNING  # aiomqtt warns past 10 PUBACKs awaited at once
    return client, password


OnConnected = Callable[[], Awaitable[None]]
OnMessage = Callable[[aiomqtt.Message], Awaitable[None]]
OnState = Callable[[ConnectionState], None]


class MqttConnection:
    def __init__(self, settings: MqttConfig, node: str, *, subscriptions: Callable[[], list[str]],
                 on_connected: OnConnected, on_message: OnMessage, on_state: OnState | None = None,
                 on_ready: Callable[[], None] | None = None,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.settings = settings
        self.node = node
        self.availability = names.availability_topic(settings.base_topic, node)
        self._subscriptions = subscriptions
        self._on_connected = on_connected
        self._on_message = on_message
        self._on_state = on_state
        self._on_ready = on_ready
        self._clock = clock
        self.state = ConnectionState(MQTT_CONNECTING, clock())
        self._client: aiomqtt.Client | None = None
        self._ready = False  # a session is up and on_connected has run: publishing is fine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._state_dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._connected_once = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._set_state(replace(self.state, since=self._clock()))
        self._tasks = [self._loop.create_task(self._run(), name="certd-mqtt"),
                       self._loop.create_task(self._write_states(), name="certd-mqtt-state")]
        for task in self._tasks:
            task.add_done_callback(_log_crash)

    async def close(self) -> None:
        """`offline` on the availability topic, then DISCONNECT (the broker drops the will)."""
        self._stop.set()
        run = self._tasks[0] if self._tasks else None
        if run is not None:
            try:
                await asyncio.wait_for(asyncio.shield(run), CLOSE_TIMEOUT + self.settings.connect_timeout)
            except (TimeoutError, Exception):  # noqa: BLE001 - closing anyway
                run.cancel()
        self._set_state(ConnectionState(MQTT_STOPPED, self._clock(),
                                        last_connected_at=self.state.last_connected_at))
        for task in self._tasks[1:]:
            self._state_dirty.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT)
            except (TimeoutError, Exception):  # noqa: BLE001
                task.cancel()
        self._tasks = []

    @property
    def ready(self) -> bool:
        """A session is up and announced (read from any thread)."""
        return self._ready

    async def wait_ready(self, timeout: float) -> bool:
        """Until the first session is up (tests, benchmarks)."""
        try:
            await asyncio.wait_for(self._connected_once.wait(), timeout)
        except TimeoutError:
            return False
        return self._ready

    # -- publishing ------------------------------------------------------------------------------
    async def publish(self, topic: str, payload: str | bytes, *, qos: int = 1, retain: bool = True,
                      properties: Properties | None = None, timeout: float | None = None,
                      during_connect: bool = False) -> None:
        """Publish and wait for the PUBACK (QoS 1); raises NotConnected or aiomqtt.MqttError."""
        client = self._client
        if client is None or not (self._ready or during_connect):
            raise NotConnected(self.state.error or f"not connected to broker {self.settings.broker()} yet")
        await client.publish(topic, payload, qos=qos, retain=retain, properties=properties,
                             timeout=timeout if timeout is not None else self.settings.connect_timeout)

    def publish_from_thread(self, topic: str, payload: str | bytes, *, properties: Properties | None = None,
                            timeout: float) -> None:
        """`publish` from a worker thread, waiting for its PUBACK (never call it on the loop)."""
        if self._loop is None or not self._ready:
            raise NotConnected(self.state.error or f"not connected to broker {self.settings.broker()}")
        future = asyncio.run_coroutine_threadsafe(
            self.publish(topic, payload, properties=properties, timeout=timeout), self._loop)
        try:
            future.result(timeout + 1.0)
        except TimeoutError:
            future.cancel()
            raise aiomqtt.MqttError(f"no PUBACK within {timeout:g} s") from None

    # -- the session loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        attempts = 0
        last_logged: str | None = None
        while not self._stop.is_set():
            password: str | None = None
            try:
                client, password = await open_client(self.settings, self.node)
                await self._session(client)
                attempts, last_logged = 0, None
                if self._stop.is_set():
                    return
                raise aiomqtt.MqttError("the broker closed the session")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure: name it, wait, try again
                was_connected = self.state.state == MQTT_CONNECTED
                self._ready = False
                self._client = None
                if self._stop.is_set():
                    return
                attempts += 1
                why = describe_failure(exc, self.settings, password)
                delay = reconnect_delay(attempts, self.settings.reconnect_max)
                self._set_state(ConnectionState(
                    MQTT_DISCONNECTED, self._clock() if why != self.state.error or was_connected else
                    self.state.since, why, attempts, self.state.last_connected_at))
                if was_connected:
                    log.warning("MQTT: lost the connection: %s; reconnecting in %g s", why, delay)
                elif why != last_logged or attempts % LOG_AGAIN_EVERY == 0:
                    log.warning("MQTT: cannot connect (attempt %d): %s; retrying in %g s", attempts, why, delay)
                else:
                    log.debug("MQTT: attempt %d failed again: %s", attempts, why)
                last_logged = why
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass

    async def _session(self, client: aiomqtt.Client) -> None:
        async with client:
            self._client = client
            previous = self.state
            now = self._clock()
            self._set_state(ConnectionState(MQTT_CONNECTED, now, None, 0, now))
            log.info("MQTT: connected to broker %s as %s%s", self.settings.broker(), client.identifier,
                     f" (after {previous.attempts} failed attempt(s))" if previous.attempts else "")
            await client.publish(self.availability, ONLINE, qos=1, retain=True)
            for topic in self._subscriptions():
                await client.subscribe(topic, qos=1)
            reader = asyncio.get_running_loop().create_task(self._read(client), name="certd-mqtt-read")
            stopper = asyncio.get_running_loop().create_task(self._stop.wait())
            try:
                await self._on_connected()  # messages queue meanwhile (bounded)
                self._ready = True
                self._connected_once.set()
                if self._on_ready is not None:
                    self._on_ready()
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._ready = False
                stopper.cancel()
                if not reader.done():
                    reader.cancel()
                    try:
                        await reader
                    except (asyncio.CancelledError, Exception):  # noqa: BLE001
                        pass
            if self._stop.is_set():
                try:
                    await client.publish(self.availability, OFFLINE, qos=1, retain=True, timeout=CLOSE_TIMEOUT)
                except Exception as exc:  # noqa: BLE001 - the DISCONNECT below still drops the will
                    log.warning("MQTT: could not publish %r on shutdown: %s", OFFLINE, type(exc).__name__)
                log.info("MQTT: disconnecting from broker %s", self.settings.broker())
                return
            reader.result()  # the session ended: raise why

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                await self._on_message(message)
            except Exception:  # noqa: BLE001 - one bad message must not end the session
                log.exception("MQTT: handling a message on %s failed", printable(str(message.topic)))

    # -- state for certd status ------------------------------------------------------------------
    def _set_state(self, state: ConnectionState) -> None:
        self.state = state
        self._state_dirty.set()

    async def _write_states(self) -> None:
        """Write the latest state to the store after each change (coalesced, in order)."""
        while True:
            await self._state_dirty.wait()
            self._state_dirty.clear()
            state = self.state
            if self._on_state is not None:
                try:
                    await asyncio.to_thread(self._on_state, state)
                except Exception as exc:  # noqa: BLE001 - the store may be away; the next change writes
                    log.warning("MQTT: could not record the connection state: %s", type(exc).__name__)
            if state.state == MQTT_STOPPED:
                return


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("MQTT: %s stopped on a bug; no MQTT until certd restarts", task.get_name(),
                  exc_info=task.exception())


def process_identity() -> tuple[str, int]:
    """(host name, pid) stored with the state: a status on the same host can tell a dead daemon."""
    return socket.gethostname(), os.getpid()
