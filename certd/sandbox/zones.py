"""Zone and record state shared by the Cloudflare API emulator and the DNS server.

The API writes here at once; the DNS server reads a view that lags behind by
`propagation_delay` seconds, as Cloudflare's edge does after an API change.
The lag is modelled with a short change log: the DNS view is the current state
with every change younger than the delay undone.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

__all__ = ["SandboxZone", "SandboxRecord", "ZoneStore", "new_id", "utc_now", "normalize_name"]


def new_id() -> str:
    """A Cloudflare-style identifier: 32 lowercase hex characters."""
    return secrets.token_hex(16)


def utc_now() -> datetime:
    return datetime.now(UTC)


def normalize_name(name: str) -> str:
    """Lowercase, no trailing dot: the form Cloudflare returns names in."""
    return name.strip().rstrip(".").lower()


@dataclass(frozen=True)
class SandboxZone:
    id: str
    name: str
    status: str
    created_on: datetime
    name_servers: tuple[str, ...]


@dataclass(frozen=True)
class SandboxRecord:
    """One DNS record as Cloudflare stores it (immutable; changes make a new value)."""

    id: str
    zone_id: str
    zone_name: str
    name: str
    type: str
    content: str
    ttl: int = 1
    proxied: bool = False
    priority: int | None = None
    comment: str | None = None
    tags: tuple[str, ...] = ()
    created_on: datetime = field(default_factory=utc_now)
    modified_on: datetime = field(default_factory=utc_now)
    comment_modified_on: datetime | None = None
    tags_modified_on: datetime | None = None


@dataclass(frozen=True)
class _Change:
    at: float  # monotonic seconds
    record_id: str
    before: SandboxRecord | None
    after: SandboxRecord | None


class ZoneStore:
    """Thread-safe zones and records. All mutation goes through `transaction()`."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._zones: dict[str, SandboxZone] = {}
        self._records: dict[str, SandboxRecord] = {}
        self._changes: list[_Change] = []
        self._serials: dict[str, int] = {}
        self._propagation_delay = 0.0

    # -- propagation --------------------------------------------------------
    @property
    def propagation_delay(self) -> float:
        with self._lock:
            return self._propagation_delay

    @propagation_delay.setter
    def propagation_delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("propagation_delay must be >= 0")
        with self._lock:
            self._propagation_delay = float(seconds)

    # -- zones ---------------------------------------------------------------
    def add_zone(self, name: str, *, status: str = "active") -> SandboxZone:
        name = normalize_name(name)
        with self._lock:
            if any(z.name == name for z in self._zones.values()):
                raise ValueError(f"zone {name} already exists in the sandbox")
            zone = SandboxZone(
                id=new_id(), name=name, status=status, created_on=utc_now(),
                name_servers=(f"ns1.{name}", f"ns2.{name}"),
            )
            self._zones[zone.id] = zone
            self._serials[zone.id] = int(time.time())
            return zone

    def zones(self) -> list[SandboxZone]:
        with self._lock:
            return sorted(self._zones.values(), key=lambda z: z.name)

    def zone(self, zone_id: str) -> SandboxZone | None:
        with self._lock:
            return self._zones.get(zone_id)

    def zone_by_name(self, name: str) -> SandboxZone | None:
        name = normalize_name(name)
        with self._lock:
            return next((z for z in self._zones.values() if z.name == name), None)

    def zone_for(self, fqdn: str) -> SandboxZone | None:
        """The zone whose name is the longest suffix of `fqdn` (None outside every zone)."""
        fqdn = normalize_name(fqdn)
        with self._lock:
            best: SandboxZone | None = None
            for zone in self._zones.values():
                if fqdn == zone.name or fqdn.endswith("." + zone.name):
                    if best is None or len(zone.name) > len(best.name):
                        best = zone
            return best

    def serial(self, zone_id: str) -> int:
        """SOA serial: bumped at every change in the zone."""
        with self._lock:
            return self._serials.get(zone_id, 1)

    # -- records (current state, what the API sees) -------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the store lock so a check-then-write (duplicate checks) is atomic."""
        with self._lock:
            yield

    def record(self, record_id: str) -> SandboxRecord | None:
        with self._lock:
            return self._records.get(record_id)

    def records(self, zone_id: str | None = None) -> list[SandboxRecord]:
        with self._lock:
            found = [r for r in self._records.values() if zone_id is None or r.zone_id == zone_id]
        return sorted(found, key=lambda r: (r.zone_name, r.name, r.type, r.content, r.created_on))

    def put(self, record: SandboxRecord) -> SandboxRecord:
        """Create or replace a record (by id) and log the change for propagation."""
        with self._lock:
            if record.zone_id not in self._zones:
                raise KeyError(f"no zone with id {record.zone_id}")
            before = self._records.get(record.id)
            self._records[record.id] = record
            self._log(record.id, before, record)
            return record

    def delete(self, record_id: str) -> SandboxRecord | None:
        with self._lock:
            before = self._records.pop(record_id, None)
            if before is not None:
                self._log(record_id, before, None)
            return before

    def _log(self, record_id: str, before: SandboxRecord | None, after: SandboxRecord | None) -> None:
        now = self._clock()
        zone_id = (after or before).zone_id  # type: ignore[union-attr]
        self._serials[zone_id] = self._serials.get(zone_id, 0) + 1
        self._changes.append(_Change(now, record_id, before, after))
        # Changes older than the delay are visible everywhere: forget them.
        horizon = now - self._propagation_delay
        while self._changes and self._changes[0].at <= horizon:
            self._changes.pop(0)

    # -- records as the DNS server sees them --------------------------------
    def visible_records(self, zone_id: str) -> list[SandboxRecord]:
        """The zone's records as served by DNS: changes younger than the delay are undone."""
        with self._lock:
            horizon = self._clock() - self._propagation_delay
            view = {rid: r for rid, r in self._records.items() if r.zone_id == zone_id}
            for change in reversed(self._changes):
                if change.at <= horizon:
                    break
                prior = change.before
                if prior is None:
                    view.pop(change.record_id, None)
                elif prior.zone_id == zone_id:
                    view[change.record_id] = prior
            return list(view.values())


def with_changes(record: SandboxRecord, **changes: object) -> SandboxRecord:
    """A copy of `record` with fields changed (a thin, typed-enough `dataclasses.replace`)."""
    return replace(record, **changes)  # type: ignore[arg-type]
