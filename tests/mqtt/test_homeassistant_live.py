"""certd in Home Assistant over a real Mosquitto: the daemon (Pebble, the Cloudflare emulator)
publishes discovery configs and states, a subscribing client reads them back as Home Assistant
would; renewals, failed renewals, Home Assistant's `online`, removed certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from certd.config import parse_config
from certd.mqtt.service import MqttService
from tests.daemon.conftest import MovableClock, cert_toml, run, running_daemon
from tests.mqtt.conftest import mqtt_toml, publish, watching

MINUTE = dt.timedelta(minutes=1)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


async def check_now(daemon, clock, name: str = "web"):  # type: ignore[no-untyped-def]
    done = daemon.checks_done
    daemon.schedule(name, clock())
    assert await daemon.wait_for(lambda: daemon.checks_done > done, 60), "the check did not finish"
    return daemon.results[name]


def test_discovery_read_back_then_renewal_failure_and_recovery(make_setup, mqtt_env, node: str) -> None:
    broker = mqtt_env
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600, cloudflare_retries=0,
                       extra=mqtt_toml(broker, node))
    clock = MovableClock()
    base = f"certd/{node}/certificate/web"

    async def scenario() -> None:
        async with watching(broker, f"homeassistant/+/{node}/+/config", f"certd/{node}/#") as ha:
            async with running_daemon(setup, clock) as daemon:
                assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
                first = setup.current("web")
                assert first is not None
                await ha.wait(lambda: ha.text(f"{base}/expiry") == iso(first.not_after), what="expiry state")
                assert ha.text(f"certd/{node}/availability") == "online"

                # The discovery config as Home Assistant reads it, field by field.
                expiry = ha.json(f"homeassistant/sensor/{node}/cert_web_expiry/config")
                assert expiry["unique_id"] == f"certd_{node}_cert_web_expiry"
                assert expiry["name"] == "web expiry"
                assert expiry["device_class"] == "timestamp"
                assert expiry["state_topic"] == f"{base}/expiry"
                assert expiry["json_attributes_topic"] == f"{base}/attributes"
                assert expiry["availability"] == [{"topic": f"certd/{node}/availability",
                                                   "payload_available": "online", "payload_not_available": "offline"}]
                assert expiry["device"]["identifiers"] == [f"certd_{node}"]
                assert expiry["device"]["name"] == f"certd on {node}"
                assert expiry["origin"]["name"] == "certd"
                problem = ha.json(f"homeassistant/binary_sensor/{node}/cert_web_problem/config")
                assert problem["device_class"] == "problem"
                assert problem["json_attributes_topic"] == f"{base}/problem/attributes"
                status = ha.json(f"homeassistant/sensor/{node}/cert_web_status/config")
                assert status["device_class"] == "enum" and status["options"] == ["ok", "renewing", "failing",
                                                                                  "critical"]
                days = ha.json(f"homeassistant/sensor/{node}/cert_web_days_left/config")
                assert days["unit_of_measurement"] == "d"
                # `renewing` while the check holds its lease, then `ok`.
                await ha.wait(lambda: ha.text(f"{base}/status") == "ok", what="status ok")
                assert ha.text(f"{base}/problem") == "OFF"
                assert ha.text(f"{base}/days_left") == "0"  # a one-hour certificate
                assert json.loads(ha.last[f"{base}/attributes"])["serial"] == first.serial
                async with watching(broker, f"homeassistant/+/{node}/+/config", f"{base}/#") as late:
                    # A client subscribing later (Home Assistant after a restart) gets it all, retained.
                    await late.wait(lambda: len(late.last) >= 4 + 6, what="retained configs and states")
                    assert all(message.retain for message in late.messages)
                    assert late.last[f"{base}/expiry"] == ha.last[f"{base}/expiry"]

                # Half the lifetime later the renewal is due and Cloudflare fails: problem ON.
                clock.advance(MINUTE * 31)
                setup.world.emulator.inject_5xx(10_000, status=503, writes_only=True)
                result = await check_now(daemon, clock)
                assert result.action == "failed"
                await ha.wait(lambda: ha.text(f"{base}/problem") == "ON", what="problem ON")
                await ha.wait(lambda: ha.text(f"{base}/status") == "failing", what="status failing")
                attributes = json.loads(ha.last[f"{base}/problem/attributes"])
                assert attributes["failures"] == 1 and "503" in attributes["last_error"]
                assert ha.text(f"{base}/expiry") == iso(first.not_after)

                # Cloudflare recovers; after the backoff the renewal goes through: new expiry, problem OFF.
                setup.world.emulator.clear_faults()
                clock.advance(MINUTE * 1.5)
                result = await check_now(daemon, clock)
                assert result.action == "renewed", result
                second = setup.current("web")
                assert second is not None and second.id != first.id
                await ha.wait(lambda: ha.text(f"{base}/expiry") == iso(second.not_after), what="new expiry")
                await ha.wait(lambda: ha.text(f"{base}/problem") == "OFF", what="problem OFF")
                # (With the test's clock moved on, the fresh certificate is already due again: renewing.)
                await ha.wait(lambda: ha.text(f"{base}/status") in ("ok", "renewing"), what="status recovered")
                assert json.loads(ha.last[f"{base}/attributes"])["serial"] == second.serial
                # Each state topic changed only when its value did (not on a timer).
                assert ha.count(f"{base}/problem") == 3  # OFF, ON, OFF
            await ha.wait(lambda: ha.text(f"certd/{node}/availability") == "offline", what="offline at stop")

    run(scenario())


def test_home_assistant_online_resends_configs_and_removed_certificates_lose_their_entities(
        make_setup, mqtt_env, node: str) -> None:
    broker = mqtt_env
    certs = cert_toml("web", ["local.example.com"]) + "\n" + cert_toml("old", ["www.example.com"])
    setup = make_setup(certs, validity=3600, extra=mqtt_toml(broker, node))
    config_topic = f"homeassistant/sensor/{node}/cert_old_expiry/config"
    web_topic = f"homeassistant/sensor/{node}/cert_web_expiry/config"

    async def scenario() -> None:
        async with watching(broker, f"homeassistant/+/{node}/+/config", f"certd/{node}/#") as ha:
            async with running_daemon(setup) as daemon:
                assert await daemon.wait_for(lambda: {"web", "old"} <= set(daemon.results), 90)
                await ha.wait(lambda: ha.last.get(config_topic) and ha.last.get(web_topic), what="configs")
                before = ha.count(web_topic)

                # Home Assistant restarts and says so on its status topic: every config comes again.
                await publish(broker, "homeassistant/status", "online", user="ha")
                await ha.wait(lambda: ha.count(web_topic) > before, what="configs sent again")
                assert ha.json(web_topic)["unique_id"] == f"certd_{node}_cert_web_expiry"

                # `old` leaves the config: its entities are removed (empty retained configs).
                setup.config_path.write_text(setup.text.replace(cert_toml("old", ["www.example.com"]), ""))
                assert await daemon.reload()
                old_configs = [t for t in ha.last if t.startswith("homeassistant/") and "/cert_old_" in t]
                assert len(old_configs) == 4
                await ha.wait(lambda: all(ha.last[t] == b"" for t in old_configs), what="old entities removed")
                await ha.wait(lambda: ha.last.get(f"certd/{node}/certificate/old/expiry") == b"",
                              what="old states cleared")
                assert ha.last[web_topic] != b""

        # A retained config only an earlier run knew about (certd was stopped while it left the
        # config) is removed at the next start.
        stale = f"homeassistant/sensor/{node}/cert_gone_expiry/config"
        await publish(broker, stale, json.dumps({"unique_id": f"certd_{node}_cert_gone_expiry"}), retain=True,
                      user="certd")
        config = parse_config(setup.text.replace(cert_toml("old", ["www.example.com"]), ""))
        service = MqttService(setup.engine)
        async with watching(broker, f"homeassistant/+/{node}/+/config") as ha:
            await service.start(config)
            try:
                await ha.wait(lambda: ha.last.get(stale) == b"", what="stale config emptied")
                assert ha.last[web_topic] != b""
            finally:
                await service.close()

        # Home Assistant switched off (the broker still configured): the entities go.
        off = parse_config(setup.text.replace(cert_toml("old", ["www.example.com"]), "").replace(
            "[homeassistant]\nenabled = true", "[homeassistant]\nenabled = false"))
        service = MqttService(setup.engine)
        async with watching(broker, f"homeassistant/+/{node}/+/config") as ha:
            await service.start(off)
            try:
                await ha.wait(lambda: ha.last.get(web_topic) == b"", what="entities removed with enabled = false")
            finally:
                await service.close()

    run(scenario())


def test_days_left_changes_with_time_alone(make_setup, mqtt_env, node: str) -> None:
    """No check, no event: the snapshot is taken again when a time-driven value changes."""
    broker = mqtt_env
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600, extra=mqtt_toml(broker, node))
    base = f"certd/{node}/certificate/web"

    async def scenario() -> None:
        async with watching(broker, f"{base}/#") as ha:
            async with running_daemon(setup) as daemon:
                assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
                await ha.wait(lambda: ha.text(f"{base}/status") == "ok", what="status ok")
                service = daemon._mqtt
                assert service is not None and service.snapshot is not None
                # The next time-driven change of a one-hour certificate: its renewal time (half of it).
                current = setup.current("web")
                assert current is not None
                assert service.snapshot.next_change_at is not None
                renew_at = current.not_before + (current.not_after - current.not_before) / 2
                assert abs((service.snapshot.next_change_at - renew_at).total_seconds()) < 5
                # Once the start-up work (first check, periodic jobs) is over, nothing polls.
                for _ in range(20):
                    taken = service.snapshots
                    await asyncio.sleep(0.5)
                    if service.snapshots == taken:
                        break
                taken = service.snapshots
                await asyncio.sleep(2.0)
                assert service.snapshots == taken

    run(scenario())
