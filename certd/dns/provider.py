"""What certd needs from a DNS provider: find a name's zone, list/create/update/delete records.

Everything outside the provider implementations (Cloudflare, in-memory) and the
registry (certd.dns.registry) types against `DnsProvider` and the provider-neutral
`Zone` and `DnsRecord` here, so adding a provider touches only its own module and
the registry. Imports nothing heavy: callers pay for an SDK only when they open it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Zone:
    id: str
    name: str
    # Which of the provider's credentials serves the zone (`[[cloudflare.accounts]]`); None where
    # the provider has one credential, or the zone was built from a stored id (routed by id then).
    account: str | None = None


@dataclass(frozen=True)
class DnsRecord:
    id: str
    zone_id: str
    name: str
    type: str
    content: str
    ttl: int  # 1 = the provider's automatic TTL
    proxied: bool  # behind the provider's proxy (Cloudflare's orange cloud); False where none
    comment: str | None


@dataclass(frozen=True)
class AccountZones:
    """One credential of a provider and the zones it serves, as challenge routing needs them."""

    account: str | None  # its label (None: the provider's only credential)
    source: str  # where its secret comes from, for messages ("environment variable CF_TOKEN"); never the value
    zones: tuple[Zone, ...]  # the zones it claims: listed in config, or the ones it may list
    error: str | None = None  # why its zones could not be listed (then `zones` holds only listed ones)

    def describe(self) -> str:
        """'the token in <source> (zones a, b)': what a routing error tells the user about it."""
        who = f"account {self.account!r}: the token in {self.source}" if self.account \
            else f"the token in {self.source}"
        if self.error:
            return f"{who} could not list its zones ({self.error})"
        if not self.zones:
            return f"{who} sees no zone (without Zone:Read a token lists none)"
        return f"{who} serves {', '.join(z.name for z in self.zones)}"


class DnsProvider(Protocol):
    """The calls certd makes; errors are `certd.errors.DNSProviderError`, secrets never in them."""

    def find_zone(self, fqdn: str) -> Zone:
        """The zone whose name is the longest suffix of `fqdn` (a leading `*.` ignored)."""
        ...

    def list_records(
        self, zone: Zone, *, name: str | None = None, type: str | None = None,
        content: str | None = None,
    ) -> list[DnsRecord]:
        """Records of `zone`, filtered by exact name, type and content when given."""
        ...

    def create_record(
        self, zone: Zone, *, type: str, name: str, content: str, ttl: int = 1,
        proxied: bool | None = None, comment: str | None = None,
    ) -> DnsRecord:
        """Create a record; an identical existing one (same name, type, content) is returned instead."""
        ...

    def update_record(self, zone: Zone, record: DnsRecord, **changes: Any) -> DnsRecord:
        """Change some of content, proxied, ttl, comment of `record`; returns it as it is now."""
        ...

    def delete_record(self, zone: Zone, record_id: str) -> bool:
        """Delete; False when it was already gone (a retried delete is not an error)."""
        ...

    def accounts(self) -> list[AccountZones]:
        """Each credential and the zones it serves (listing them where it may): what decides,
        before an order, which zone and credential a challenge record goes to."""
        ...

    def check_zone(self, zone_id: str, account: str | None) -> str | None:
        """None when `account`'s credential can use the zone with this id (read its records);
        else why not, naming the credential's source and the missing permission."""
        ...


def normalize_name(fqdn: str) -> str:
    """Names compare lower-case, without the root dot; a wildcard's zone is its base name's."""
    return fqdn.lower().rstrip(".").removeprefix("*.")


def zone_covers(zone_name: str, name: str) -> bool:
    return name == zone_name or name.endswith("." + zone_name)


def longest_zone(zones: Iterable[Zone], name: str) -> Zone | None:
    """The zone whose name is the longest suffix of the (normalized) `name`, if any."""
    best: Zone | None = None
    for zone in zones:
        if zone_covers(zone.name, name) and (best is None or len(zone.name) > len(best.name)):
            best = zone
    return best
