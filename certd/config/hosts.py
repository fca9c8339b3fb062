"""The `[[hosts]]` tables and the `[dns_records]` section: gray-cloud A/AAAA records for LAN hosts.

A wallbox or GSM charger checks the server certificate against a host name, so
the home-server pattern is a public name whose Cloudflare record is DNS only
(gray cloud) and points at a LAN address. These models say which names, which
address source, and how often certd reconciles them.

    [[hosts]]
    name = "local.example.com"
    address = "192.168.1.100"        # fixed; or a list ["192.168.1.100", "fd00::64"]
    # interface = "eth0"             # that interface's current address
    # interface = "auto"             # the interface that carries the default route
    # aaaa = true                    # with interface: also publish its IPv6 address
    ttl = "auto"                     # or 60..86400 seconds
    adopt = false                    # take over an identical existing record
    keep = false                     # leave the record in Cloudflare when this host is removed
    allow_public = false             # a public address is intended: no "leaves the LAN" warning
    # zone = "example.com"           # the zone holding the record (default: the longest zone found)
    # zone_id = "0123..."            # ... by id: works with a token that cannot list zones (no Zone:Read)

    [dns_records]
    interval = 300                   # seconds between reconciliations in the daemon
    address_poll_interval = 30       # seconds between (cheap, local) address-change checks
    keep_removed = false             # keep the records of every removed host
    marker = "managed by certd"      # comment that marks certd's records in Cloudflare
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from certd.config._base import Section
from certd.config.certificates import check_zone_id, check_zone_name, normalize_domain

AUTO_INTERFACE = "auto"
# Cloudflare's own ownership of a record is nothing more than this text in its comment.
DEFAULT_MARKER = "managed by certd"
# Cloudflare: ttl 1 means "automatic"; otherwise 60..86400 (30 only on Enterprise zones).
CLOUDFLARE_AUTO_TTL = 1
MIN_TTL, MAX_TTL = 60, 86400
# Free-plan zones allow 100 characters of comment.
MAX_MARKER_LENGTH = 100

# Linux IFNAMSIZ is 16 including the NUL; other systems are shorter still.
_INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")

PROXIED_REFUSED = (
    "proxied = true is refused: an orange-cloud (proxied) record answers with Cloudflare's "
    "edge addresses, never the LAN address, so devices on the LAN could not reach the host "
    "(and a charger's local TLS connection breaks). certd only manages DNS-only (gray-cloud) "
    "records: remove `proxied` or set it to false"
)


def check_lan_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an address to publish; refuse the ones no LAN device could ever use."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
    if address.is_unspecified:
        raise ValueError(f"{value} is the unspecified address; give the host's LAN address")
    if address.is_loopback:
        raise ValueError(
            f"{value} is a loopback address: every device would connect to itself, not to this host"
        )
    if address.is_multicast:
        raise ValueError(f"{value} is a multicast address, not a host address")
    if address.is_link_local:
        raise ValueError(
            f"{value} is a link-local address: it is not stable and IPv6 link-local needs an "
            "interface scope that DNS cannot carry"
        )
    return address


class HostConfig(Section):
    """One public name published as DNS-only A (and optionally AAAA) records."""

    name: str
    # Exactly one address source: fixed addresses, or an interface (or "auto").
    address: str | list[str] | None = None
    interface: str | None = None
    # With `interface`: also publish the interface's IPv6 address as an AAAA record.
    aaaa: bool = False
    ttl: Literal["auto"] | Annotated[int, Field(ge=MIN_TTL, le=MAX_TTL)] = "auto"
    # Accepted only as false, so that a copied Cloudflare export fails loudly, not silently.
    proxied: bool = False
    # Take over a pre-existing record that already matches this host exactly.
    adopt: bool = False
    # When this host is later removed from config, leave its records in Cloudflare.
    keep: bool = False
    # The address is meant to be public (e.g. a cloud OCPP server that GSM chargers reach over
    # the Internet): no "traffic leaves the LAN" warning.
    allow_public: bool = False
    # The zone holding the record, when the longest-suffix lookup (which needs Zone:Read) should
    # not decide: by name, or by id (then a token with only DNS:Edit on that zone is enough).
    zone: str | None = None
    zone_id: str | None = None

    _zone = field_validator("zone")(lambda cls, v: None if v is None else check_zone_name(v))
    _zone_id = field_validator("zone_id")(lambda cls, v: None if v is None else check_zone_id(v))

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        name = normalize_domain(value)
        if name.startswith("*."):
            raise ValueError(f"{value!r}: wildcard host records are not supported; list each name")
        return name

    @field_validator("address")
    @classmethod
    def _valid_addresses(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        values = [value] if isinstance(value, str) else value
        if not values:
            raise ValueError("give at least one address (or use `interface`)")
        if any(v.strip().lower() == AUTO_INTERFACE for v in values):
            raise ValueError('"auto" is an interface choice: write interface = "auto"')
        addresses = [check_lan_address(v) for v in values]
        for version, label in ((4, "IPv4"), (6, "IPv6")):
            same = [str(a) for a in addresses if a.version == version]
            if len(same) > 1:
                raise ValueError(
                    f"several {label} addresses ({', '.join(same)}): round-robin records are not "
                    "managed; give one IPv4 and/or one IPv6 address"
                )
        return [str(a) for a in addresses]

    @field_validator("interface")
    @classmethod
    def _valid_interface(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value != AUTO_INTERFACE and not _INTERFACE_NAME.match(value):
            raise ValueError(f"{value!r} is not a network interface name (e.g. eth0) or \"auto\"")
        return value

    @field_validator("proxied")
    @classmethod
    def _gray_cloud_only(cls, value: bool) -> bool:
        if value:
            raise ValueError(PROXIED_REFUSED)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "HostConfig":
        if (self.address is None) == (self.interface is None):
            raise ValueError(
                'give exactly one address source: address = "192.168.1.100", '
                'interface = "eth0", or interface = "auto"'
            )
        if self.aaaa and self.interface is None:
            raise ValueError(
                "aaaa = true only applies to an interface source; with fixed addresses list the "
                'IPv6 address in `address` (e.g. address = ["192.168.1.100", "fd00::64"])'
            )
        return self

    @property
    def cloudflare_ttl(self) -> int:
        return CLOUDFLARE_AUTO_TTL if self.ttl == "auto" else int(self.ttl)

    @property
    def fixed_addresses(self) -> list[str]:
        return list(self.address or [])

    @property
    def record_types(self) -> tuple[str, ...]:
        """Which record types this host publishes (known without touching the network)."""
        if self.address is not None:
            versions = {ipaddress.ip_address(a).version for a in self.address}
            return tuple(t for t, v in (("A", 4), ("AAAA", 6)) if v in versions)
        return ("A", "AAAA") if self.aaaa else ("A",)

    def describe_source(self) -> str:
        if self.address is not None:
            return "fixed " + ", ".join(self.address)
        if self.interface == AUTO_INTERFACE:
            return "interface auto (default route)"
        return f"interface {self.interface}"


def _unique_host_names(hosts: list[HostConfig]) -> list[HostConfig]:
    names = [h.name for h in hosts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"host names must be unique: {', '.join(duplicates)}")
    return hosts


HostList = Annotated[list[HostConfig], Field(max_length=500), AfterValidator(_unique_host_names)]


class DnsRecordsConfig(Section):
    """`[dns_records]`: how the daemon schedules gray-cloud reconciliation."""

    # Seconds between full reconciliations (Cloudflare reads; writes only when something drifted).
    interval: Annotated[float, Field(ge=30, le=86400)] = 300.0
    # Seconds between local address checks (no network traffic); a change triggers a sync.
    address_poll_interval: Annotated[float, Field(ge=1, le=3600)] = 30.0
    # Keep (stop managing, leave in Cloudflare) the records of every host removed from
    # config, whatever that host's own `keep` said.
    keep_removed: bool = False
    # Comment written on every record certd owns; change it when two certd instances share a zone.
    marker: Annotated[str, Field(min_length=1, max_length=MAX_MARKER_LENGTH)] = DEFAULT_MARKER

    @field_validator("marker")
    @classmethod
    def _printable_marker(cls, value: str) -> str:
        value = value.strip()
        if not value or not value.isprintable():
            raise ValueError("the marker must be non-empty printable text")
        return value
