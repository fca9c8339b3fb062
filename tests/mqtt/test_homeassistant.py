"""Home Assistant discovery payloads from a snapshot, field by field against the documented schema
(https://www.home-assistant.io/integrations/mqtt/ and sensor.mqtt / binary_sensor.mqtt), and the
pure decisions behind the states."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from certd import __version__
from certd.mqtt import homeassistant as ha
from certd.mqtt.names import slug
from certd.mqtt.publisher import RetainedPublisher
from certd.mqtt.snapshot import (
    BundleState, CertificateState, GateState, ListenerState, RegistryState, Snapshot, certificate_status,
    days_left, gate_progress, next_day_boundary,
)

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
SETTINGS = ha.HaSettings("homeassistant", "certd", "nas")
# Home Assistant: discovery topic levels (node_id, object_id) are [a-zA-Z0-9_-].
ID_LEVEL = re.compile(r"^[a-zA-Z0-9_-]+$")


def cert(name: str = "web", **changes) -> CertificateState:  # type: ignore[no-untyped-def]
    values = dict(name=name, domains=("web.example.com",), not_after=NOW + dt.timedelta(days=41, hours=3),
                  days_left=41, status="ok", problem=False, last_error=None, failures=0, deploy_failures=0,
                  issuer="R11", serial="abc123", renew_at=NOW + dt.timedelta(days=11), next_check=None,
                  last_attempt=NOW - dt.timedelta(days=49), last_outcome="success")
    values.update(changes)
    return CertificateState(**values)


def full_snapshot() -> Snapshot:
    return Snapshot(
        node="nas", taken_at=NOW, certificates=(cert(), cert("wall.box", status="failing", problem=True,
                                                              failures=2, last_error="DNS-01 failed: 503")),
        listeners=(ListenerState("wallbox:9000", 3, NOW + dt.timedelta(days=40), True),
                   ListenerState("lan", 0, None, None)),
        pending_approvals=2,
        bundles=(BundleState("fleet", 4, {"roots": 2, "full": 4}, NOW - dt.timedelta(hours=5)),),
        registries=(RegistryState("hub", "mqtt", 1, 0),),
        gates=(GateState("wallbox:9000", "web", "pending", 66.7),))


def configs_by_unique_id(discovery: ha.Discovery) -> dict[str, tuple[str, dict]]:  # type: ignore[type-arg]
    return {json.loads(p)["unique_id"]: (t, json.loads(p)) for t, p in discovery.configs.items()}


def test_every_config_has_the_documented_shape() -> None:
    discovery = ha.discovery(full_snapshot(), SETTINGS)
    assert len(discovery.configs) == 4 * 2 + 3 * 2 + 1 + 2 + 1 + 2
    for topic, text in discovery.configs.items():
        prefix, component, node_id, object_id, last = topic.split("/")
        assert (prefix, last) == ("homeassistant", "config")
        assert component in ("sensor", "binary_sensor")
        assert ID_LEVEL.match(node_id) and ID_LEVEL.match(object_id)
        config = json.loads(text)
        assert config["unique_id"] == f"certd_nas_{object_id}"
        assert config["availability"] == [{"topic": "certd/nas/availability", "payload_available": "online",
                                            "payload_not_available": "offline"}]
        assert config["device"] == {"identifiers": ["certd_nas"], "name": "certd on nas", "manufacturer": "certd",
                                    "model": "certd daemon", "sw_version": __version__}
        assert config["origin"] == {"name": "certd", "sw_version": __version__}
        assert config["state_topic"].startswith("certd/nas/")
        assert config["state_topic"] in discovery.states
        assert config["qos"] == 1
        if "json_attributes_topic" in config:
            assert isinstance(json.loads(discovery.states[config["json_attributes_topic"]]), dict)
        if "entity_category" in config:
            assert config["entity_category"] == "diagnostic"  # the only category sensors may have
        if config.get("device_class") == "enum":
            assert config["options"] and "unit_of_measurement" not in config and "state_class" not in config
            assert discovery.states[config["state_topic"]] in config["options"] + ["None"]
    assert len({json.loads(p)["unique_id"] for p in discovery.configs.values()}) == len(discovery.configs)


def test_certificate_entities_field_by_field() -> None:
    discovery = ha.discovery(full_snapshot(), SETTINGS)
    configs = configs_by_unique_id(discovery)
    topic, expiry = configs["certd_nas_cert_web_expiry"]
    assert topic == "homeassistant/sensor/nas/cert_web_expiry/config"
    assert expiry["name"] == "web expiry"
    assert expiry["device_class"] == "timestamp"
    assert "entity_category" not in expiry
    assert expiry["state_topic"] == "certd/nas/certificate/web/expiry"
    assert discovery.states["certd/nas/certificate/web/expiry"] == "2027-01-04T15:00:00+00:00"
    assert expiry["json_attributes_topic"] == "certd/nas/certificate/web/attributes"
    assert json.loads(discovery.states["certd/nas/certificate/web/attributes"]) == {
        "domains": ["web.example.com"], "issuer": "R11", "serial": "abc123", "renew_at": "2026-12-05T12:00:00+00:00"}

    _, days = configs["certd_nas_cert_web_days_left"]
    assert (days["device_class"], days["unit_of_measurement"], days["state_class"]) == ("duration", "d", "measurement")
    assert discovery.states[days["state_topic"]] == "41"

    _, status = configs["certd_nas_cert_web_status"]
    assert status["device_class"] == "enum"
    assert status["options"] == ["ok", "renewing", "failing", "critical"]
    assert discovery.states[status["state_topic"]] == "ok"

    topic, problem = configs["certd_nas_cert_web_problem"]
    assert topic == "homeassistant/binary_sensor/nas/cert_web_problem/config"
    assert (problem["device_class"], problem["payload_on"], problem["payload_off"]) == ("problem", "ON", "OFF")
    assert discovery.states[problem["state_topic"]] == "OFF"

    # A name with a dot gets a safe id with a hash, and the failure shows as problem ON + last error.
    key = slug("wall.box")
    assert key.startswith("wall_box_") and ID_LEVEL.match(key)
    _, failing = configs[f"certd_nas_cert_{key}_problem"]
    assert discovery.states[failing["state_topic"]] == "ON"
    attributes = json.loads(discovery.states[failing["json_attributes_topic"]])
    assert attributes["last_error"] == "DNS-01 failed: 503" and attributes["failures"] == 2
    assert discovery.states[configs[f"certd_nas_cert_{key}_status"][1]["state_topic"]] == "failing"


def test_listener_bundle_registry_and_gate_entities() -> None:
    discovery = ha.discovery(full_snapshot(), SETTINGS)
    configs = configs_by_unique_id(discovery)
    key = slug("wallbox:9000")
    _, chargers = configs[f"certd_nas_listener_{key}_chargers"]
    assert chargers["state_class"] == "measurement" and discovery.states[chargers["state_topic"]] == "3"
    _, served = configs[f"certd_nas_listener_{key}_served_expiry"]
    assert served["device_class"] == "timestamp" and served["entity_category"] == "diagnostic"
    assert discovery.states[served["state_topic"]] == "2027-01-03T12:00:00+00:00"
    topic, current = configs[f"certd_nas_listener_{key}_served_current"]
    assert topic.startswith("homeassistant/binary_sensor/") and discovery.states[current["state_topic"]] == "ON"
    # A listener serving files of another tool: unknown, not "OFF".
    _, files = configs["certd_nas_listener_lan_served_current"]
    assert discovery.states[files["state_topic"]] == "None"
    assert discovery.states[configs["certd_nas_listener_lan_served_expiry"][1]["state_topic"]] == "None"

    _, approvals = configs["certd_nas_pending_charger_approvals"]
    assert discovery.states[approvals["state_topic"]] == "2"
    _, version = configs["certd_nas_bundle_fleet_version"]
    assert discovery.states[version["state_topic"]] == "4"
    assert json.loads(discovery.states[version["json_attributes_topic"]]) == {"flavours": {"roots": 2, "full": 4}}
    _, changed = configs["certd_nas_bundle_fleet_last_change"]
    assert changed["device_class"] == "timestamp"
    assert discovery.states[changed["state_topic"]] == "2026-11-24T07:00:00+00:00"
    _, pending = configs["certd_nas_registry_hub_pending"]
    assert discovery.states[pending["state_topic"]] == "1"
    assert json.loads(discovery.states[pending["json_attributes_topic"]]) == {"kind": "mqtt", "rejected": 0}
    _, progress = configs[f"certd_nas_gate_{key}_web_progress"]
    assert progress["unit_of_measurement"] == "%" and discovery.states[progress["state_topic"]] == "66.7"
    _, gate_state = configs[f"certd_nas_gate_{key}_web_state"]
    assert gate_state["device_class"] == "enum" and discovery.states[gate_state["state_topic"]] == "pending"


def test_unknown_values_are_home_assistants_none_and_device_name_is_configurable() -> None:
    snapshot = Snapshot("nas", NOW, (cert(not_after=None, days_left=None, status="renewing", issuer=None,
                                          serial=None, renew_at=None),))
    discovery = ha.discovery(snapshot, ha.HaSettings("ha", "base", "nas", "garage certd"))
    assert discovery.states["base/nas/certificate/web/expiry"] == "None"
    assert discovery.states["base/nas/certificate/web/days_left"] == "None"
    config = json.loads(discovery.configs["ha/sensor/nas/cert_web_expiry/config"])
    assert config["device"]["name"] == "garage certd"
    assert config["availability"][0]["topic"] == "base/nas/availability"


@pytest.mark.parametrize(("kwargs", "expected"), [
    (dict(issued=True, expired=False, failures=0, critical=False, due=False, in_progress=False), "ok"),
    (dict(issued=True, expired=False, failures=0, critical=False, due=True, in_progress=False), "renewing"),
    (dict(issued=True, expired=False, failures=0, critical=False, due=False, in_progress=True), "renewing"),
    (dict(issued=False, expired=False, failures=0, critical=True, due=True, in_progress=False), "renewing"),
    (dict(issued=True, expired=False, failures=1, critical=False, due=True, in_progress=False), "failing"),
    (dict(issued=True, expired=False, failures=3, critical=True, due=True, in_progress=False), "critical"),
    (dict(issued=True, expired=True, failures=0, critical=True, due=True, in_progress=False), "critical"),
])
def test_certificate_status(kwargs, expected) -> None:  # type: ignore[no-untyped-def]
    assert certificate_status(**kwargs) == expected


def test_days_left_and_when_it_changes() -> None:
    not_after = NOW + dt.timedelta(days=3, hours=5)
    assert days_left(not_after, NOW) == 3
    boundary = next_day_boundary(not_after, NOW)
    assert boundary == NOW + dt.timedelta(hours=5)
    assert days_left(not_after, boundary - dt.timedelta(seconds=1)) == 3
    assert days_left(not_after, boundary + dt.timedelta(seconds=1)) == 2
    assert days_left(NOW - dt.timedelta(hours=1), NOW) == -1
    assert days_left(None, NOW) is None


def test_gate_progress() -> None:
    assert gate_progress("idle", None, None) == 100.0
    assert gate_progress("pending", 3, 2) == 66.7
    assert gate_progress("pending", 0, 0) == 100.0
    assert gate_progress("pending", 4, 9) == 100.0
    assert gate_progress("blocked", None, None) is None


def test_publisher_sends_only_changes_and_empties_what_left() -> None:
    import asyncio

    sent: list[tuple[str, str]] = []

    async def publish(topic: str, payload: str) -> None:
        sent.append((topic, payload))

    publisher = RetainedPublisher(keep=frozenset({"certd/nas/availability"}))
    publisher.want({"ha/sensor/nas/a/config": "A"}, {"certd/nas/a": "1"})
    assert asyncio.run(publisher.sync(publish)) == 2
    assert sent == [("ha/sensor/nas/a/config", "A"), ("certd/nas/a", "1")]  # config first
    sent.clear()
    publisher.want({"ha/sensor/nas/a/config": "A"}, {"certd/nas/a": "2"})
    asyncio.run(publisher.sync(publish))
    assert sent == [("certd/nas/a", "2")]  # only what changed
    sent.clear()
    publisher.want({}, {})
    publisher.seen("ha/sensor/nas/old/config", b"{...}")  # left by an earlier run
    publisher.seen("certd/nas/availability", b"online")  # never emptied
    asyncio.run(publisher.sync(publish))
    assert sent == [("ha/sensor/nas/a/config", ""), ("ha/sensor/nas/old/config", ""), ("certd/nas/a", "")]
    sent.clear()
    publisher.want({"ha/sensor/nas/b/config": "B"}, {})
    publisher.forget()  # a new session: everything wanted goes out again
    asyncio.run(publisher.sync(publish))
    assert sent == [("ha/sensor/nas/b/config", "B")]
    sent.clear()
    publisher.resend_configs()  # Home Assistant said "online"
    asyncio.run(publisher.sync(publish))
    assert sent == [("ha/sensor/nas/b/config", "B")]
