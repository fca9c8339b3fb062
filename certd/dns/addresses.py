"""Where a host's address comes from: fixed, an interface's current address, or `auto`.

Reading the machine (`read_interfaces`) is separate from choosing an address
(`resolve_host`), so the choice is a pure function tested on made-up snapshots.
Interface addresses come from psutil; the default route from the kernel's
routing table in /proc (Linux), which needs no network traffic at all.

Choice rules, so that a record does not flap:
- IPv4: the interface's first address that is not link-local (169.254/16).
- IPv6: never link-local, temporary (privacy), deprecated or tentative addresses;
  a ULA (fc00::/7) is preferred over a global address because ULAs stay when the
  ISP changes the delegated prefix.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from certd.config.hosts import AUTO_INTERFACE, HostConfig
from certd.errors import CertdError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Linux route flags (include/uapi/linux/route.h, ipv6_route.h).
_RTF_UP = 0x0001
_RTF_REJECT = 0x0200
# IPv6 address flags (include/uapi/linux/if_addr.h) that make an address unfit to publish.
_IFA_F_TEMPORARY = 0x01
_IFA_F_TENTATIVE = 0x40
_IFA_F_DEPRECATED = 0x20
_IFA_F_DADFAILED = 0x08
_UNFIT_IPV6_FLAGS = _IFA_F_TEMPORARY | _IFA_F_TENTATIVE | _IFA_F_DEPRECATED | _IFA_F_DADFAILED

_ULA = ipaddress.IPv6Network("fc00::/7")


@dataclass(frozen=True)
class InterfaceSnapshot:
    """What the machine's network interfaces look like at one moment (plain data)."""

    # Interface name -> its addresses in the kernel's order.
    addresses: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)
    # Interfaces that are administratively up (others are treated as having no address).
    up: frozenset[str] = frozenset()
    # IPv6 addresses the kernel marks temporary/deprecated/tentative (not to be published).
    unfit_ipv6: frozenset[IPAddress] = frozenset()
    # Interfaces carrying the IPv4 / IPv6 default route (None: no default route).
    default_v4: str | None = None
    default_v6: str | None = None
    # Why the default route could not be read (e.g. not Linux); None when it could.
    default_route_error: str | None = None


@dataclass(frozen=True)
class HostAddresses:
    """The contents a host's records should have now, per record type, or why not."""

    name: str
    contents: Mapping[str, str]  # "A" / "AAAA" -> address text
    errors: Mapping[str, str]  # "A" / "AAAA" -> reason the address is unknown now


# -- choosing (pure) ---------------------------------------------------------
def pick_ipv4(addresses: tuple[IPAddress, ...]) -> ipaddress.IPv4Address | None:
    candidates = [a for a in addresses if isinstance(a, ipaddress.IPv4Address)]
    usable = [a for a in candidates if not (a.is_link_local or a.is_loopback)]
    return usable[0] if usable else None


def pick_ipv6(addresses: tuple[IPAddress, ...], unfit: frozenset[IPAddress] = frozenset()
              ) -> ipaddress.IPv6Address | None:
    usable = [
        a for a in addresses
        if isinstance(a, ipaddress.IPv6Address)
        and not (a.is_link_local or a.is_loopback or a.is_multicast or a in unfit)
    ]
    preferred = [a for a in usable if a in _ULA] or usable
    return preferred[0] if preferred else None


def _interface_for(host: HostConfig, version: int, snapshot: InterfaceSnapshot) -> tuple[str | None, str | None]:
    """(interface name, None) or (None, reason)."""
    if host.interface != AUTO_INTERFACE:
        return host.interface, None
    chosen = snapshot.default_v4 if version == 4 else snapshot.default_v6
    if chosen is None and version == 6 and snapshot.default_v4 is not None:
        # Many LANs have IPv6 without an IPv6 default route: use the IPv4 route's interface.
        chosen = snapshot.default_v4
    if chosen is None:
        if snapshot.default_route_error:
            return None, f"interface auto: {snapshot.default_route_error}"
        return None, "interface auto: this machine has no default route"
    return chosen, None


def resolve_host(host: HostConfig, snapshot: InterfaceSnapshot) -> HostAddresses:
    """The addresses `host` should publish, given the interfaces in `snapshot`."""
    contents: dict[str, str] = {}
    if host.address is not None:
        for fixed in host.address:
            contents["A" if ipaddress.ip_address(fixed).version == 4 else "AAAA"] = fixed
        return HostAddresses(host.name, contents, {})
    errors: dict[str, str] = {}
    for rtype, version in (("A", 4), ("AAAA", 6)):
        if rtype not in host.record_types:
            continue
        name, problem = _interface_for(host, version, snapshot)
        if name is None:
            errors[rtype] = problem or "no interface"
            continue
        if name not in snapshot.addresses:
            known = ", ".join(sorted(snapshot.addresses)) or "none"
            errors[rtype] = f"interface {name} does not exist (interfaces: {known})"
            continue
        if name not in snapshot.up:
            errors[rtype] = f"interface {name} is down"
            continue
        found = snapshot.addresses[name]
        chosen: IPAddress | None = (
            pick_ipv4(found) if version == 4 else pick_ipv6(found, snapshot.unfit_ipv6)
        )
        if chosen is None:
            label = "IPv4" if version == 4 else "stable IPv6 (non-link-local, non-temporary)"
            errors[rtype] = f"interface {name} has no {label} address"
            continue
        contents[rtype] = str(chosen)
    return HostAddresses(host.name, contents, errors)


def needs_interfaces(hosts: list[HostConfig]) -> bool:
    return any(h.interface is not None for h in hosts)


# -- reading the machine (I/O) -----------------------------------------------
def _default_route_v4(text: str) -> str | None:
    """Interface of the lowest-metric IPv4 default route in /proc/net/route text."""
    best: tuple[int, str] | None = None
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        iface, destination, flags, metric, mask = cols[0], cols[1], int(cols[3], 16), int(cols[6]), cols[7]
        if destination != "00000000" or mask != "00000000":
            continue
        if not flags & _RTF_UP or flags & _RTF_REJECT:
            continue
        if best is None or metric < best[0]:
            best = (metric, iface)
    return best[1] if best else None


def _default_route_v6(text: str) -> str | None:
    """Interface of the lowest-metric IPv6 default route in /proc/net/ipv6_route text."""
    best: tuple[int, str] | None = None
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 10:
            continue
        destination, prefix_len, iface = cols[0], cols[1], cols[9]
        metric, flags = int(cols[5], 16), int(cols[8], 16)
        if destination != "0" * 32 or prefix_len != "00" or iface == "lo":
            continue
        if not flags & _RTF_UP or flags & _RTF_REJECT:
            continue
        if best is None or metric < best[0]:
            best = (metric, iface)
    return best[1] if best else None


def _unfit_ipv6_from_proc(text: str) -> frozenset[IPAddress]:
    """IPv6 addresses flagged temporary/deprecated/tentative in /proc/net/if_inet6 text."""
    unfit: set[IPAddress] = set()
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 6:
            continue
        try:
            address = ipaddress.IPv6Address(bytes.fromhex(cols[0]))
            flags = int(cols[4], 16)
        except ValueError:
            continue
        if flags & _UNFIT_IPV6_FLAGS:
            unfit.add(address)
    return frozenset(unfit)


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="ascii")
    except OSError:
        return None


def read_interfaces(proc: str = "/proc") -> InterfaceSnapshot:
    """Snapshot the machine's interfaces (psutil) and default routes (/proc, Linux only)."""
    try:
        import psutil
    except ImportError:
        raise CertdError(
            "hosts with `interface` need the psutil package (pip install psutil), "
            "or give a fixed `address`"
        ) from None

    addresses: dict[str, tuple[IPAddress, ...]] = {}
    for name, entries in psutil.net_if_addrs().items():
        found: list[IPAddress] = []
        for entry in entries:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                found.append(ipaddress.ip_address(entry.address.split("%", 1)[0]))
            except ValueError:
                continue
        addresses[name] = tuple(found)
    up = frozenset(name for name, stats in psutil.net_if_stats().items() if stats.isup)

    route_v4 = _read_text(f"{proc}/net/route")
    route_v6 = _read_text(f"{proc}/net/ipv6_route")
    inet6 = _read_text(f"{proc}/net/if_inet6")
    error = None if route_v4 is not None else (
        f"cannot read the routing table ({proc}/net/route: Linux only); name the interface instead"
    )
    return InterfaceSnapshot(
        addresses=addresses,
        up=up,
        unfit_ipv6=_unfit_ipv6_from_proc(inet6) if inet6 else frozenset(),
        default_v4=_default_route_v4(route_v4) if route_v4 else None,
        default_v6=_default_route_v6(route_v6) if route_v6 else None,
        default_route_error=error,
    )


def resolve_hosts(hosts: list[HostConfig], snapshot: InterfaceSnapshot | None = None
                  ) -> list[HostAddresses]:
    """Resolve every host; the machine is read only when some host uses an interface."""
    if snapshot is None:
        snapshot = read_interfaces() if needs_interfaces(hosts) else InterfaceSnapshot()
    return [resolve_host(h, snapshot) for h in hosts]


class AddressWatch:
    """Cheap address-change detection for the daemon: reads local interfaces only.

    No network traffic and no database access, so the daemon can poll it every
    `[dns_records] address_poll_interval` seconds and run a sync when it reports
    a change. Call `poll()` once before the start-up sync to take the baseline
    (it reports nothing on that first call). The baseline is only a trigger
    optimisation: after a restart the start-up sync reconciles anyway.
    """

    def __init__(self, hosts: list[HostConfig]) -> None:
        self._hosts = [h for h in hosts if h.interface is not None]
        self._last: dict[tuple[str, str], str | None] | None = None

    @property
    def active(self) -> bool:
        """False when no host uses an interface source (nothing to watch)."""
        return bool(self._hosts)

    def poll(self, snapshot: InterfaceSnapshot | None = None) -> list[str]:
        """Changes since the previous poll, e.g. ["local.example.com A: 192.168.1.5 -> 192.168.1.7"]."""
        if not self._hosts:
            return []
        if snapshot is None:
            snapshot = read_interfaces()
        now: dict[tuple[str, str], str | None] = {}
        for resolved in resolve_hosts(self._hosts, snapshot):
            for rtype in ("A", "AAAA"):
                if rtype in resolved.contents or rtype in resolved.errors:
                    now[(resolved.name, rtype)] = resolved.contents.get(rtype)
        before, self._last = self._last, now
        if before is None:
            return []
        return [
            f"{name} {rtype}: {before.get((name, rtype)) or 'none'} -> {value or 'none'}"
            for (name, rtype), value in sorted(now.items())
            if before.get((name, rtype)) != value
        ]
