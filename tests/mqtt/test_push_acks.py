"""Bundle pushes over the broker: each version retained, QoS 1, signed; devices acknowledge; certd
says who is current, behind or silent; bad acks are logged once per device and ignored."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
from sqlmodel import select

from certd.mqtt.devices import fleet_devices
from certd.mqtt.service import MqttService
from certd.store.db import session_scope
from certd.store.mqtt import MqttDeviceAck
from certd.store.trust import TrustDelivery
from certd.trust.track import on_issued
from tests.mqtt.conftest import HMAC_ENV, mqtt_registry_toml, mqtt_toml, publish, watching
from tests import pki
from tests.trust.conftest import bundle_toml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def fleet_config(world, broker, node: str, prefix: str, *, registry_extra: str = "", protocol: str = "3.1.1",
                 homeassistant: bool = False):  # type: ignore[no-untyped-def]
    return world.config(bundle_toml(world.anchors_dir, registries=mqtt_registry_toml(prefix=prefix,
                                                                                     extra=registry_extra)),
                        extra=mqtt_toml(broker, node, homeassistant=homeassistant, protocol=protocol))


def issue(world, config, cn: str):  # type: ignore[no-untyped-def]
    """A new issuance of `ocpp` under a new root: the fleet bundle gets a new version (delivered)."""
    root = pki.root(f"{cn} Root")
    inter = pki.intermediate(f"{cn} Inter", root)
    world.trust_anchor(root)
    issued = world.issue("ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], inter), [inter])
    return on_issued(config, world.engine, issued, deliver=True)


def opened(payload: bytes) -> dict:  # type: ignore[type-arg]
    """The device's view of an envelope: signature checked over the exact body, then the document."""
    envelope = json.loads(payload)
    body = envelope["body"].encode()
    expected = "sha256=" + hmac.new(os.environ[HMAC_ENV].encode(), body, hashlib.sha256).hexdigest()
    assert envelope["signature"] == expected
    document = json.loads(body)
    assert hashlib.sha256(document["pem"].encode("ascii")).hexdigest() == document["sha256"]
    assert envelope["idempotency_key"] == document["idempotency_key"]
    return document


def ack(document: dict) -> str:  # type: ignore[type-arg]
    return json.dumps({"version": document["version"], "sha256": document["sha256"], "flavour": document["flavour"]})


async def wait_acks(world, count: int, timeout: float = 10.0) -> list[MqttDeviceAck]:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.05)):
        with session_scope(world.engine) as session:
            rows = list(session.exec(select(MqttDeviceAck).order_by(MqttDeviceAck.device_id)).all())
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} acks not recorded within {timeout:g} s (have {len(rows)})")


def test_versions_published_signed_retained_and_devices_current_behind_silent(world, mqtt_env, node: str) -> None:
    broker = mqtt_env
    prefix = f"fleet-{node}"
    config = fleet_config(world, broker, node, prefix, registry_extra="silent_after = 3600")
    topic = f"{prefix}/bundles/fleet/full"

    async def scenario() -> None:
        service = MqttService(world.engine)
        await service.start(config)
        try:
            assert service.connection is not None and await service.connection.wait_ready(15)
            async with watching(broker, f"{prefix}/bundles/#", user="device") as devices:
                first = await asyncio.to_thread(issue, world, config, "One")
                assert [d.outcome for d in first.deliveries] == ["accepted", "accepted"]  # roots + full
                assert "PUBACK" in first.deliveries[0].detail
                await devices.wait(lambda: topic in devices.last, what="version 1 on the broker")
                v1 = opened(devices.last[topic])
                assert (v1["bundle"], v1["flavour"], v1["version"]) == ("fleet", "full", 1)
                for device in ("dev-a", "dev-b", "dev-c"):
                    await publish(broker, f"{prefix}/acks/fleet/{device}", ack(v1), retain=True)
                await wait_acks(world, 3)

                second = await asyncio.to_thread(issue, world, config, "Two")
                assert {d.outcome for d in second.deliveries} == {"accepted"}
                await devices.wait(lambda: opened(devices.last[topic])["version"] == 2, what="version 2")
                v2 = opened(devices.last[topic])
                for device in ("dev-a", "dev-b"):
                    await publish(broker, f"{prefix}/acks/fleet/{device}", ack(v2), retain=True)
                for _ in range(200):
                    rows = await wait_acks(world, 3)
                    if sum(r.version == 2 for r in rows) == 2:
                        break
                    await asyncio.sleep(0.05)

            # A device connecting later finds the newest version retained.
            async with watching(broker, topic, user="device") as late:
                await late.wait(lambda: topic in late.last, what="retained version")
                assert late.messages[0].retain and opened(late.last[topic])["version"] == 2
        finally:
            await service.close()

        now = dt.datetime.now(dt.timezone.utc)
        [view] = fleet_devices(config, world.engine, now)
        assert (view.registry, view.bundle) == ("fleet-mqtt", "fleet")
        assert view.published["full"].version == 2 and view.published["full"].delivered
        states = {d.device_id: (d.state, d.version) for d in view.devices}
        assert states == {"dev-a": ("current", 2), "dev-b": ("current", 2), "dev-c": ("behind", 1)}
        [later] = fleet_devices(config, world.engine, now + dt.timedelta(hours=2))
        assert {d.device_id: d.state for d in later.devices}["dev-c"] == "silent"

        # The same from the command line, as JSON.
        done = subprocess.run([sys.executable, "-m", "certd", "--config", str(world.tmp / "certd.toml"),
                               "fleet", "devices", "--json"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        [listed] = json.loads(done.stdout)
        assert listed["counts"] == {"current": 2, "behind": 1, "silent": 0}
        assert listed["published"]["full"]["version"] == 2
        text = subprocess.run([sys.executable, "-m", "certd", "--config", str(world.tmp / "certd.toml"),
                               "fleet", "devices"], capture_output=True, text=True, timeout=60).stdout
        assert "fleet-mqtt / fleet: full v2, roots v2; devices: current 2, behind 1, silent 0" in text

    asyncio.run(scenario())


def test_bad_acks_are_logged_once_per_device_and_ignored(world, mqtt_env, node: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    broker = mqtt_env
    prefix = f"fleet-{node}"
    config = fleet_config(world, broker, node, prefix)
    caplog.set_level(logging.WARNING, logger="certd.mqtt")

    async def scenario() -> None:
        service = MqttService(world.engine)
        await service.start(config)
        try:
            assert service.connection is not None and await service.connection.wait_ready(15)
            async with watching(broker, f"{prefix}/bundles/fleet/full", user="device") as devices:
                await asyncio.to_thread(issue, world, config, "Only")
                await devices.wait(lambda: devices.last, what="version 1")
                v1 = opened(next(iter(devices.last.values())))
            bad = {
                "unknown-bundle": (f"{prefix}/acks/other/dev-1", ack(v1)),
                "bad-sha": (f"{prefix}/acks/fleet/dev-2", json.dumps({"version": 1, "sha256": "ab" * 32})),
                "wrong-version": (f"{prefix}/acks/fleet/dev-3", json.dumps({"version": 9, "sha256": v1["sha256"]})),
                "malformed": (f"{prefix}/acks/fleet/dev-4", "{not json"),
                "too-big": (f"{prefix}/acks/fleet/dev-5", json.dumps({"version": 1, "pad": "x" * 5000})),
                # Brokers refuse control characters in topics; a right-to-left override passes.
                "unprintable": (f"{prefix}/acks/fleet/dev-\u202e-6", ack(v1)),
            }
            for _ in range(3):  # every device repeats itself: one log line each, not three
                for topic, payload in bad.values():
                    await publish(broker, topic, payload)
            await publish(broker, f"{prefix}/acks/fleet/good", ack(v1))
            await wait_acks(world, 1)
            for _ in range(100):  # the row is committed in a thread before the counter moves
                if service.acks.ignored >= 18 and service.acks.recorded >= 1:
                    break
                await asyncio.sleep(0.05)
            assert service.acks.ignored == 18 and service.acks.recorded == 1
        finally:
            await service.close()

    asyncio.run(scenario())
    with session_scope(world.engine) as session:
        assert [r.device_id for r in session.exec(select(MqttDeviceAck)).all()] == ["good"]
    warnings = [r.getMessage() for r in caplog.records if "ignored:" in r.getMessage()]
    assert len(warnings) == 6
    joined = "\n".join(warnings)
    assert "unknown bundle" in joined and "malformed JSON" in joined and "payload of 5" in joined
    assert joined.count("bad sha256") == 2
    assert "dev-\\u202e-6" in joined and "\u202e" not in joined  # escaped in the log


def test_ack_memory_stays_bounded_under_a_flood(world, mqtt_env, node: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of distinct devices: the log-once and pending memories never pass their bounds,
    and every valid ack still reaches the store."""
    from certd.mqtt import acks

    monkeypatch.setattr(acks, "LOG_ONCE_SIZE", 100)
    monkeypatch.setattr(acks, "MAX_PENDING", 50)
    config = fleet_config(world, mqtt_env, node, f"fleet-{node}")
    registry = config.trust.registries[0]
    result = issue(world, config, "Flood")  # no connection in this process: delivered by a connection of its own
    assert {d.outcome for d in result.deliveries} == {"accepted"}
    with session_scope(world.engine) as session:
        version = session.exec(select(TrustDelivery)).first()
        assert version is not None
    document = json.loads(version.body)

    async def scenario() -> None:
        recorder = acks.AckRecorder(world.engine)
        high_water = 0
        for index in range(3000):
            await recorder.handle(registry, {"fleet"}, f"fleet-{node}/acks/fleet/junk-{index}", b"{")
            assert len(recorder._logged) <= 100
        payload = json.dumps({"version": document["version"], "sha256": document["sha256"]}).encode()
        for index in range(600):
            await recorder.handle(registry, {"fleet"}, f"fleet-{node}/acks/fleet/dev-{index:04d}", payload)
            high_water = max(high_water, len(recorder._pending))
        await recorder.close()
        assert high_water <= 50
        assert recorder.ignored == 3000 and recorder.recorded == 600

    asyncio.run(scenario())
    with session_scope(world.engine) as session:
        assert len(session.exec(select(MqttDeviceAck)).all()) == 600


def test_broker_restart_without_persistence_loses_nothing(world, own_broker, node: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker goes away mid-rollout and comes back empty (its store deleted): the pending version
    is sent after the reconnect (every attempt recorded), the delivered one and the Home Assistant
    states are published again, devices' acks get recorded."""
    broker = own_broker
    monkeypatch.setenv("CERTD_TEST_MQTT_PASSWORD", broker.users["certd"])
    monkeypatch.setenv(HMAC_ENV, "restart-secret")
    prefix = f"fleet-{node}"
    config = fleet_config(world, broker, node, prefix, homeassistant=True)
    topic = f"{prefix}/bundles/fleet/full"

    async def scenario() -> None:
        service = MqttService(world.engine)
        await service.start(config)
        try:
            assert service.connection is not None and await service.connection.wait_ready(15)
            await asyncio.to_thread(issue, world, config, "Before")
            broker.stop()
            for stored in (broker.directory / "data").glob("*"):
                stored.unlink()  # the broker forgets every retained message and session
            for _ in range(200):
                if service.connection.state.state == "disconnected":
                    break
                await asyncio.sleep(0.05)
            second = await asyncio.to_thread(issue, world, config, "During")
            assert {d.outcome for d in second.deliveries} == {"retry"}
            assert "not connected" in second.deliveries[0].detail
            broker.start()
            async with watching(broker, f"{prefix}/bundles/#", f"certd/{service.connection.node}/#",
                                user="device") as devices:
                await devices.wait(lambda: topic in devices.last and opened(devices.last[topic])["version"] == 2,
                                   30, "version 2 after the restart")
                await devices.wait(lambda: devices.text(f"certd/{node}/availability") == "online", 10, "online")
                await devices.wait(lambda: devices.text(f"certd/{node}/registry/fleet-mqtt/pending") == "0", 10,
                                   "pending deliveries 0")
                await publish(broker, f"{prefix}/acks/fleet/dev-r", ack(opened(devices.last[topic])), retain=True)
                rows = await wait_acks(world, 1)
                assert rows[0].version == 2
        finally:
            await service.close()

    asyncio.run(scenario())
    with session_scope(world.engine) as session:
        rows = session.exec(select(TrustDelivery).order_by(TrustDelivery.id)).all()
        assert {r.state for r in rows} == {"delivered"}
        from certd.trust import outbox

        views = {v.delivery.id: v for v in outbox.deliveries(world.engine)}
    attempts = [[a.outcome for a in views[r.id].attempts] for r in rows]
    assert attempts[:2] == [["accepted"], ["accepted"]]  # version 1 (roots, full) before the restart
    assert attempts[2:] == [["retry", "accepted"], ["retry", "accepted"]]  # version 2: retried, then sent


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_the_example_device_script_installs_and_acknowledges(world, mqtt_env, node: str, tmp_path: Path,
                                                             protocol: str) -> None:
    """examples/mqtt-device.py as a device: verifies, installs atomically, acknowledges (envelope
    signature over MQTT 3.1.1, user-property signature over MQTT 5)."""
    broker = mqtt_env
    prefix = f"fleet-{node}"
    signature = "user_property" if protocol == "5" else "envelope"
    config = fleet_config(world, broker, node, prefix, protocol=protocol,
                          registry_extra=f"signature = \"{signature}\"")
    target = tmp_path / "device" / "ca-bundle.pem"
    target.parent.mkdir()
    env = dict(os.environ, MQTT_PASSWORD=broker.users["device"], BUNDLE_HMAC_SECRET=os.environ[HMAC_ENV])

    async def scenario() -> None:
        service = MqttService(world.engine)
        await service.start(config)
        try:
            assert service.connection is not None and await service.connection.wait_ready(15)
            await asyncio.to_thread(issue, world, config, "Script")
            if protocol == "5":  # the payload is the body itself; the signature is a user property
                async with aiomqtt.Client("127.0.0.1", broker.port, username="device",
                                          password=broker.users["device"],
                                          protocol=aiomqtt.ProtocolVersion.V5) as client:
                    await client.subscribe(f"{prefix}/bundles/fleet/full", qos=1)
                    message = await asyncio.wait_for(anext(aiter(client.messages)), 10)
                    properties = dict(message.properties.UserProperty)
                    body = message.payload
                    assert properties["signature"] == "sha256=" + hmac.new(
                        os.environ[HMAC_ENV].encode(), body, hashlib.sha256).hexdigest()
                    assert json.loads(body)["version"] == 1
            device = await asyncio.create_subprocess_exec(
                sys.executable, str(EXAMPLES / "mqtt-device.py"), "--host", "127.0.0.1", "--port", str(broker.port),
                "--username", "device", "--device-id", "script-1", "--prefix", prefix, "--bundle", "fleet",
                "--install", str(target), "--protocol", protocol, "--once", env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                out, err = await asyncio.wait_for(device.communicate(), 30)
            finally:
                if device.returncode is None:
                    device.kill()
                    await device.wait()
            assert device.returncode == 0, err.decode()
            assert "installed fleet full version 1" in out.decode()
            rows = await wait_acks(world, 1)
            assert (rows[0].device_id, rows[0].version, rows[0].flavour) == ("script-1", 1, "full")
        finally:
            await service.close()

    asyncio.run(scenario())
    [view] = fleet_devices(config, world.engine, dt.datetime.now(dt.timezone.utc))
    assert [(d.device_id, d.state) for d in view.devices] == [("script-1", "current")]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == view.published["full"].sha256
