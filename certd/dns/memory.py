"""A `DnsProvider` whose zones and records live in this process (`[dns] provider = "memory"`).

For tests of what certd does with DNS records (challenge records, gray-cloud sync)
that do not exercise Cloudflare itself: no token, no network. It keeps the rules
every caller relies on: names compare lower-case without the root dot, a record
belongs to the longest matching zone, an identical record is returned instead of
duplicated, a CNAME stands alone at its name, and a second delete is not an error.
Nothing is persisted: configs sharing a state_dir share one provider (`for_config`),
so a test can seed zones for the provider certd opens from the same config.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from certd.dns.provider import AccountZones, DnsRecord, Zone, longest_zone, normalize_name, zone_covers
from certd.errors import DNSProviderError

if TYPE_CHECKING:
    from certd.config import Config

_CHANGEABLE = frozenset({"content", "proxied", "ttl", "comment"})
_PROXIABLE = frozenset({"A", "AAAA", "CNAME"})


class MemoryDNS:
    """Zones and records in a dict, guarded by one lock (sync code calls it from worker threads)."""

    def __init__(self, zones: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._zones: dict[str, Zone] = {}  # by id
        self._records: dict[str, DnsRecord] = {}  # by id, in creation order
        for name in zones:
            self.add_zone(name)

    # -- set-up and inspection (not part of DnsProvider) -------------------------
    def add_zone(self, name: str) -> Zone:
        """Serve `name` (idempotent: the same zone again returns the existing one)."""
        name = name.lower().rstrip(".")
        with self._lock:
            for zone in self._zones.values():
                if zone.name == name:
                    return zone
            zone = Zone(id=uuid.uuid4().hex, name=name)
            self._zones[zone.id] = zone
            return zone

    def zones(self) -> list[Zone]:
        with self._lock:
            return sorted(self._zones.values(), key=lambda z: z.name)

    def records(self) -> list[DnsRecord]:
        """Every record of every zone, oldest first."""
        with self._lock:
            return list(self._records.values())

    # -- DnsProvider ---------------------------------------------------------------
    def find_zone(self, fqdn: str) -> Zone:
        name = normalize_name(fqdn)
        zones = self.zones()
        best = longest_zone(zones, name)
        if best is None:
            visible = ", ".join(z.name for z in zones) or "none"
            raise DNSProviderError(f"no zone for {name} in the in-memory DNS provider (zones: {visible})")
        return best

    def list_records(
        self, zone: Zone, *, name: str | None = None, type: str | None = None,
        content: str | None = None,
    ) -> list[DnsRecord]:
        wanted_name = name.lower().rstrip(".") if name else None
        with self._lock:
            self._known_zone(zone)
            return [r for r in self._records.values()
                    if r.zone_id == zone.id and (wanted_name is None or r.name == wanted_name)
                    and (not type or r.type == type) and (content is None or r.content == content)]

    def create_record(
        self, zone: Zone, *, type: str, name: str, content: str, ttl: int = 1,
        proxied: bool | None = None, comment: str | None = None,
    ) -> DnsRecord:
        name = name.lower().rstrip(".")
        record = DnsRecord(id=uuid.uuid4().hex, zone_id=zone.id, name=name, type=type, content=content,
                           ttl=ttl, proxied=bool(proxied), comment=comment)
        with self._lock:
            self._known_zone(zone)
            if not zone_covers(zone.name, name):
                raise DNSProviderError(f"cannot create {type} {name}: it is not in zone {zone.name}")
            for existing in self._records.values():
                if (existing.zone_id, existing.name, existing.type, existing.content) == (
                        zone.id, name, type, content):
                    return existing
            self._check(record, f"create {type} {name}")
            self._records[record.id] = record
            return record

    def update_record(self, zone: Zone, record: DnsRecord, **changes: Any) -> DnsRecord:
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise TypeError(f"update_record: cannot change {', '.join(sorted(unknown))}")
        with self._lock:
            self._known_zone(zone)
            current = self._records.get(record.id)
            if current is None or current.zone_id != zone.id:
                raise DNSProviderError(f"cannot update {record.type} {record.name}: "
                                       f"no record {record.id} in zone {zone.name}")
            updated = dataclasses.replace(current, **changes)
            self._check(updated, f"update {record.type} {record.name}")
            self._records[record.id] = updated
            return updated

    def delete_record(self, zone: Zone, record_id: str) -> bool:
        with self._lock:
            self._known_zone(zone)
            record = self._records.get(record_id)
            if record is None or record.zone_id != zone.id:
                return False
            del self._records[record_id]
            return True

    def accounts(self) -> list[AccountZones]:
        return [AccountZones(None, "the in-memory DNS provider", tuple(self.zones()))]

    def check_zone(self, zone_id: str, account: str | None = None) -> str | None:
        with self._lock:
            return None if zone_id in self._zones else f"the in-memory DNS provider has no zone id {zone_id}"

    # -- rules -------------------------------------------------------------------
    def _known_zone(self, zone: Zone) -> None:
        if zone.id not in self._zones:
            raise DNSProviderError(f"the in-memory DNS provider has no zone {zone.name} (id {zone.id})")

    def _check(self, record: DnsRecord, what: str) -> None:
        """Refuse what the zone cannot hold: a duplicate, a CNAME next to other records, a proxied TXT."""
        if record.proxied and record.type not in _PROXIABLE:
            raise DNSProviderError(f"cannot {what}: a {record.type} record cannot be proxied")
        for other in self._records.values():
            if other.id == record.id or (other.zone_id, other.name) != (record.zone_id, record.name):
                continue
            if (other.type, other.content) == (record.type, record.content):
                raise DNSProviderError(f"cannot {what}: an identical record exists ({other.id})")
            if "CNAME" in (other.type, record.type):
                raise DNSProviderError(f"cannot {what}: a CNAME cannot share its name with other records")


_shared: dict[str, MemoryDNS] = {}
_shared_lock = threading.Lock()


def for_config(config: "Config") -> MemoryDNS:
    """The in-memory provider of this config's state_dir (one per state_dir and process)."""
    with _shared_lock:
        return _shared.setdefault(config.state_dir, MemoryDNS())
