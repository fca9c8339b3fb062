"""Fixtures for the MQTT tests: the session's own Mosquitto, configs that point certd at it, and
a subscribing client that reads back what certd published (as Home Assistant would).

Each test uses its own node name, so its topics (discovery configs, states, availability)
never meet another test's on the shared broker.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from tests.conftest import missing_part
from tests.daemon.conftest import ari_proxy_factory, make_setup, pebble_factory  # noqa: F401 - fixtures
from tests.mqtt.broker import Broker, available
from tests.trust.conftest import make_world, world  # noqa: F401 - fixtures

PASSWORD_ENV = "CERTD_TEST_MQTT_PASSWORD"
HMAC_ENV = "CERTD_TEST_MQTT_HMAC"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    problem = available()
    if problem:
        missing_part(problem)
    server = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    yield server
    server.cleanup()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker for one test (it gets stopped and restarted)."""
    problem = available()
    if problem:
        missing_part(problem)
    server = Broker(tmp_path / "mosquitto").start()
    yield server
    server.cleanup()


@pytest.fixture
def node() -> str:
    return f"nas-{secrets.token_hex(3)}"


@pytest.fixture
def mqtt_env(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Broker:
    monkeypatch.setenv(PASSWORD_ENV, broker.users["certd"])
    monkeypatch.setenv(HMAC_ENV, "fleet-hmac-" + secrets.token_hex(8))
    return broker


def mqtt_toml(broker: Broker, node: str, *, homeassistant: bool = True, tls: bool = False,
              protocol: str = "3.1.1", host: str = "127.0.0.1", extra: str = "",
              discovery_prefix: str = "homeassistant") -> str:
    port = broker.tls_port if tls else broker.port
    text = (f"[mqtt]\nhost = \"{host}\"\nport = {port}\nusername = \"certd\"\npassword_env = \"{PASSWORD_ENV}\"\n"
            f"node_name = \"{node}\"\nprotocol = \"{protocol}\"\nreconnect_max = 2\nconnect_timeout = 5\n")
    if tls:
        text += f"tls = true\nca_file = \"{broker.ca_file}\"\n"
    text += extra + "\n"
    if homeassistant:
        text += f"[homeassistant]\nenabled = true\ndiscovery_prefix = \"{discovery_prefix}\"\n"
    return text


def mqtt_registry_toml(name: str = "fleet-mqtt", *, prefix: str = "fleet", extra: str = "") -> str:
    return (f"[[trust.registries]]\nname = \"{name}\"\nkind = \"mqtt\"\ntopic_prefix = \"{prefix}\"\n"
            f"hmac_secret_env = \"{HMAC_ENV}\"\n{extra}\n")


@dataclass
class Watcher:
    """A subscriber on the test broker: every message, and the last payload per topic."""

    client: aiomqtt.Client
    messages: list[aiomqtt.Message] = field(default_factory=list)
    last: dict[str, bytes] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            self.messages.append(message)
            self.last[str(message.topic)] = payload
            self._changed.set()

    async def wait(self, predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass

    def text(self, topic: str) -> str | None:
        payload = self.last.get(topic)
        return None if payload is None else payload.decode()

    def json(self, topic: str) -> dict:  # type: ignore[type-arg]
        payload = self.last.get(topic)
        assert payload, f"nothing retained on {topic}"
        return json.loads(payload)

    def count(self, topic: str) -> int:
        return sum(1 for m in self.messages if str(m.topic) == topic)


class watching:
    """`async with watching(broker, "homeassistant/#", ...) as watcher:` as the "ha" user."""

    def __init__(self, broker: Broker, *filters: str, user: str = "ha") -> None:
        self.client = aiomqtt.Client("127.0.0.1", broker.port, username=user, password=broker.users[user],
                                     identifier=f"watch-{secrets.token_hex(4)}")
        self.filters = filters

    async def __aenter__(self) -> Watcher:
        await self.client.__aenter__()
        watcher = Watcher(self.client)
        for topic in self.filters:
            await self.client.subscribe(topic, qos=1)
        watcher._task = asyncio.get_running_loop().create_task(watcher._read())
        self.watcher = watcher
        return watcher

    async def __aexit__(self, *exc: object) -> None:
        if self.watcher._task is not None:
            self.watcher._task.cancel()
            await asyncio.gather(self.watcher._task, return_exceptions=True)
        await self.client.__aexit__(None, None, None)


async def publish(broker: Broker, topic: str, payload: str | bytes, *, user: str = "device",
                  retain: bool = False) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, username=user, password=broker.users[user],
                              identifier=f"pub-{secrets.token_hex(4)}") as client:
        await client.publish(topic, payload, qos=1, retain=retain)
