"""Which devices run the newest bundle version: current, behind or silent (`certd fleet devices`).

Per MQTT registry and bundle, the newest version is the newest one the broker
acknowledged for that registry (published), per flavour; before anything was published,
the newest version in the store. A device is
- current: it acknowledged that version (or a newer one);
- behind: it acknowledged an older one, and either did so after the newest was published
  (it answered, with an old version) or the newest is younger than `silent_after`;
- silent: it acknowledged an older one and has said nothing in the `silent_after` seconds
  since the newest was published.
Devices that never acknowledged anything are unknown to certd and not listed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlmodel import select

from certd.config import Config
from certd.config.trust import MqttRegistryConfig
from certd.store.db import session_scope
from certd.store.mqtt import MqttDeviceAck
from certd.store.trust import TrustBundleVersion, TrustDelivery

CURRENT, BEHIND, SILENT = "current", "behind", "silent"
STATES = (CURRENT, BEHIND, SILENT)


@dataclass(frozen=True)
class Published:
    flavour: str
    version: int
    sha256: str
    published_at: dt.datetime
    delivered: bool  # False: not on the broker yet (the store's newest is shown)


@dataclass(frozen=True)
class DeviceView:
    device_id: str
    flavour: str
    version: int
    acked_at: dt.datetime
    state: str


@dataclass
class BundleDevices:
    registry: str
    bundle: str
    published: dict[str, Published] = field(default_factory=dict)
    devices: list[DeviceView] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = {state: 0 for state in STATES}
        for device in self.devices:
            counts[device.state] += 1
        return counts


def classify(acked_version: int, acked_at: dt.datetime, newest: Published | None, now: dt.datetime,
             silent_after: float) -> str:
    """current, behind or silent (pure; see the module docstring)."""
    if newest is None or acked_version >= newest.version:
        return CURRENT
    if acked_at >= newest.published_at or (now - newest.published_at).total_seconds() < silent_after:
        return BEHIND
    return SILENT


def _published(session, registry: str, bundle: str, flavour: str) -> Published | None:  # type: ignore[no-untyped-def]
    row = session.exec(select(TrustBundleVersion, TrustDelivery).join(
        TrustDelivery, TrustDelivery.version_id == TrustBundleVersion.id).where(
        TrustDelivery.registry_name == registry, TrustDelivery.state == "delivered",
        TrustBundleVersion.bundle == bundle, TrustBundleVersion.flavour == flavour)
        .order_by(TrustBundleVersion.seq.desc())).first()  # type: ignore[attr-defined]
    if row is not None:
        version, delivery = row
        return Published(flavour, version.seq, version.sha256, delivery.delivered_at or version.created_at, True)
    latest = session.exec(select(TrustBundleVersion).where(
        TrustBundleVersion.bundle == bundle, TrustBundleVersion.flavour == flavour)
        .order_by(TrustBundleVersion.seq.desc())).first()  # type: ignore[attr-defined]
    if latest is None:
        return None
    return Published(flavour, latest.seq, latest.sha256, latest.created_at, False)


def fleet_devices(config: Config, engine: sa.Engine, now: dt.datetime,
                  bundle: str | None = None) -> list[BundleDevices]:
    """Per MQTT registry and bundle: the published versions and every device that acknowledged."""
    result = []
    with session_scope(engine) as session:
        for registry in config.trust.registries:
            if not isinstance(registry, MqttRegistryConfig):
                continue
            carried = registry.bundles or [b.name for b in config.trust.bundles]
            for name in carried:
                if bundle is not None and name != bundle:
                    continue
                view = BundleDevices(registry.name, name)
                for flavour in registry.flavours:
                    published = _published(session, registry.name, name, flavour)
                    if published is not None:
                        view.published[flavour] = published
                rows = session.exec(select(MqttDeviceAck).where(
                    MqttDeviceAck.registry_name == registry.name, MqttDeviceAck.bundle == name)
                    .order_by(MqttDeviceAck.device_id)).all()
                for row in rows:
                    view.devices.append(DeviceView(row.device_id, row.flavour, row.version, row.acked_at, classify(
                        row.version, row.acked_at, view.published.get(row.flavour), now, registry.silent_after)))
                result.append(view)
    return result
