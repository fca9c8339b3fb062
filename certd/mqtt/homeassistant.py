"""Home Assistant MQTT discovery: configs and states from a `Snapshot` (pure, no I/O).

One device per node ("certd on nas"); each entity has one discovery config, retained at
`<discovery_prefix>/<component>/<node_id>/<object_id>/config`, following Home Assistant's
documented schema: `unique_id` (stable: node + object id), `device`, `origin`,
`availability` (certd's birth/will topic), `state_topic`, `device_class`,
`entity_category`, `json_attributes_topic`. States are plain payloads on
`<base_topic>/<node_id>/...`; "None" makes Home Assistant show `unknown`.

Entities: per certificate expiry (timestamp), days left, status (enum) and problem
(binary_sensor, device_class problem, last error as attribute); per OCPP listener connected
chargers, served certificate expiry, served matches issued; pending charger approvals;
per bundle version and last change; per registry pending deliveries; per rollover gate
progress (%) and state.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from certd import __version__
from certd.mqtt import names
from certd.mqtt.snapshot import GATE_STATES, STATUSES, Snapshot

NONE = "None"  # Home Assistant's MQTT "no value": the entity shows unknown
ON, OFF = "ON", "OFF"
DIAGNOSTIC = "diagnostic"


@dataclass(frozen=True)
class HaSettings:
    discovery_prefix: str
    base_topic: str
    node: str
    device_name: str | None = None

    @property
    def node_id(self) -> str:
        return names.node_id(self.node)

    @property
    def availability_topic(self) -> str:
        return names.availability_topic(self.base_topic, self.node)


@dataclass(frozen=True)
class Entity:
    component: str  # sensor | binary_sensor
    object_id: str  # unique within the node: "cert_web_expiry"
    name: str
    state_topic: str
    state: str
    options: dict[str, Any] = field(default_factory=dict)  # device_class, unit, entity_category ...
    attributes_topic: str | None = None
    attributes: dict[str, Any] | None = None


@dataclass(frozen=True)
class Discovery:
    """Retained payloads by topic: the discovery configs and the states (with attributes)."""

    configs: dict[str, str]
    states: dict[str, str]


def timestamp(moment: dt.datetime | None) -> str:
    """ISO 8601 with a UTC offset, as a `timestamp` sensor needs; None -> unknown."""
    return NONE if moment is None else moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def number(value: float | int | None) -> str:
    if value is None:
        return NONE
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def on_off(value: bool | None) -> str:
    return NONE if value is None else (ON if value else OFF)


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else timestamp(moment)


def device(settings: HaSettings) -> dict[str, Any]:
    return {"identifiers": [f"certd_{settings.node_id}"], "name": settings.device_name or f"certd on {settings.node}",
            "manufacturer": "certd", "model": "certd daemon", "sw_version": __version__}


def entities(snapshot: Snapshot, settings: HaSettings) -> list[Entity]:
    """Every entity the snapshot shows, in a stable order."""
    base = f"{settings.base_topic}/{settings.node_id}"
    found: list[Entity] = []
    for cert in snapshot.certificates:
        key, topic = names.slug(cert.name), f"{base}/certificate/{names.slug(cert.name)}"
        found += [
            Entity("sensor", f"cert_{key}_expiry", f"{cert.name} expiry", f"{topic}/expiry",
                   timestamp(cert.not_after), {"device_class": "timestamp", "icon": "mdi:certificate"},
                   f"{topic}/attributes", {"domains": list(cert.domains), "issuer": cert.issuer,
                                           "serial": cert.serial, "renew_at": _iso(cert.renew_at)}),
            Entity("sensor", f"cert_{key}_days_left", f"{cert.name} days left", f"{topic}/days_left",
                   number(cert.days_left), {"device_class": "duration", "unit_of_measurement": "d",
                                            "state_class": "measurement"}),
            Entity("sensor", f"cert_{key}_status", f"{cert.name} status", f"{topic}/status", cert.status,
                   {"device_class": "enum", "options": list(STATUSES)}),
            Entity("binary_sensor", f"cert_{key}_problem", f"{cert.name} problem", f"{topic}/problem",
                   on_off(cert.problem), {"device_class": "problem", "payload_on": ON, "payload_off": OFF},
                   f"{topic}/problem/attributes",
                   {"last_error": cert.last_error, "failures": cert.failures,
                    "deploy_failures": cert.deploy_failures, "last_attempt": _iso(cert.last_attempt),
                    "last_outcome": cert.last_outcome}),
        ]
    for listener in snapshot.listeners:
        key, topic = names.slug(listener.label), f"{base}/listener/{names.slug(listener.label)}"
        found += [
            Entity("sensor", f"listener_{key}_chargers", f"{listener.label} connected chargers",
                   f"{topic}/chargers", number(listener.connected),
                   {"state_class": "measurement", "icon": "mdi:ev-station"}),
            Entity("sensor", f"listener_{key}_served_expiry", f"{listener.label} served certificate expiry",
                   f"{topic}/served_expiry", timestamp(listener.served_not_after),
                   {"device_class": "timestamp", "entity_category": DIAGNOSTIC}),
            Entity("binary_sensor", f"listener_{key}_served_current", f"{listener.label} serves the issued certificate",
                   f"{topic}/served_current", on_off(listener.served_matches_issued),
                   {"payload_on": ON, "payload_off": OFF, "entity_category": DIAGNOSTIC}),
        ]
    if snapshot.pending_approvals is not None:
        found.append(Entity("sensor", "pending_charger_approvals", "pending charger approvals",
                            f"{base}/chargers/pending_approvals", number(snapshot.pending_approvals),
                            {"state_class": "measurement", "icon": "mdi:account-clock"}))
    for bundle in snapshot.bundles:
        key, topic = names.slug(bundle.name), f"{base}/bundle/{names.slug(bundle.name)}"
        found += [
            Entity("sensor", f"bundle_{key}_version", f"bundle {bundle.name} version", f"{topic}/version",
                   number(bundle.version), {"entity_category": DIAGNOSTIC, "icon": "mdi:certificate-outline"},
                   f"{topic}/attributes", {"flavours": dict(bundle.flavours)}),
            Entity("sensor", f"bundle_{key}_last_change", f"bundle {bundle.name} last change",
                   f"{topic}/last_change", timestamp(bundle.last_change),
                   {"device_class": "timestamp", "entity_category": DIAGNOSTIC}),
        ]
    for registry in snapshot.registries:
        key, topic = names.slug(registry.name), f"{base}/registry/{names.slug(registry.name)}"
        found.append(Entity("sensor", f"registry_{key}_pending", f"registry {registry.name} pending deliveries",
                            f"{topic}/pending", number(registry.pending),
                            {"state_class": "measurement", "entity_category": DIAGNOSTIC, "icon": "mdi:tray-full"},
                            f"{topic}/attributes", {"kind": registry.kind, "rejected": registry.rejected}))
    for gate in snapshot.gates:
        key = f"{names.slug(gate.listener)}_{names.slug(gate.cert_name)}"
        topic = f"{base}/gate/{key}"
        label = f"rollover {gate.listener} {gate.cert_name}"
        found += [
            Entity("sensor", f"gate_{key}_progress", f"{label} progress", f"{topic}/progress",
                   number(gate.progress), {"unit_of_measurement": "%", "state_class": "measurement",
                                           "icon": "mdi:progress-check"}),
            Entity("sensor", f"gate_{key}_state", f"{label} state", f"{topic}/state",
                   gate.state if gate.state in GATE_STATES else NONE,
                   {"device_class": "enum", "options": list(GATE_STATES)}),
        ]
    return found


def config_topic(settings: HaSettings, entity: Entity) -> str:
    return f"{settings.discovery_prefix}/{entity.component}/{settings.node_id}/{entity.object_id}/config"


def config_payload(settings: HaSettings, entity: Entity) -> dict[str, Any]:
    """One entity's discovery config (single-component discovery)."""
    payload: dict[str, Any] = {
        "name": entity.name,
        "unique_id": f"certd_{settings.node_id}_{entity.object_id}",
        "state_topic": entity.state_topic,
        "availability": [{"topic": settings.availability_topic, "payload_available": "online",
                          "payload_not_available": "offline"}],
        "device": device(settings),
        "origin": {"name": "certd", "sw_version": __version__},
        "qos": 1,
    }
    if entity.attributes_topic:
        payload["json_attributes_topic"] = entity.attributes_topic
    payload.update(entity.options)
    return payload


def discovery(snapshot: Snapshot, settings: HaSettings) -> Discovery:
    """Every retained payload certd wants on the broker for Home Assistant."""
    configs: dict[str, str] = {}
    states: dict[str, str] = {}
    for entity in entities(snapshot, settings):
        configs[config_topic(settings, entity)] = json.dumps(config_payload(settings, entity), sort_keys=True)
        states[entity.state_topic] = entity.state
        if entity.attributes_topic and entity.attributes is not None:
            states[entity.attributes_topic] = json.dumps(entity.attributes, sort_keys=True)
    return Discovery(configs, states)


def owned_config_filter(settings: HaSettings) -> str:
    """Every discovery config topic of this node (to find ones a previous run left)."""
    return f"{settings.discovery_prefix}/+/{settings.node_id}/+/config"


def owned_state_filter(settings: HaSettings) -> str:
    return f"{settings.base_topic}/{settings.node_id}/#"
