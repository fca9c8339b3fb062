"""Wait until a zone's authoritative nameservers serve every expected TXT value.

Asking the authoritative servers directly (not a caching resolver) is what the
CA's validator will effectively see; polling them with growing intervals
replaces the fixed sleeps other clients use.

Every address of every nameserver must show the values, except addresses this
host cannot reach at all (an IPv6 address on an IPv4-only host, the Docker
default): those are skipped as long as another address of the same nameserver
answered. A reachable server that times out or serves old data is still waited
for, because the CA's resolver may ask exactly that one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

from certd.config.dns import parse_host_port
from certd.errors import PropagationTimeout

log = logging.getLogger(__name__)

Server = tuple[str, int]


@dataclass(frozen=True)
class Nameserver:
    """One nameserver and its addresses: any one of them may be the one the CA asks."""

    name: str
    addresses: tuple[Server, ...]


def authoritative_servers(zone: str, override: list[str]) -> list[Nameserver]:
    """`override` (host[:port], each its own nameserver) if configured, else the zone's NS records."""
    if override:
        return [_single(parse_host_port(s)) for s in override]
    resolver = dns.resolver.Resolver()
    nameservers: list[Nameserver] = []
    try:
        ns_names = [r.target.to_text() for r in resolver.resolve(zone, "NS")]
        for ns in ns_names:
            addresses: list[Server] = []
            for rdtype in ("A", "AAAA"):
                try:
                    addresses += [(r.address, 53) for r in resolver.resolve(ns, rdtype)]
                except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                    continue
            if addresses:
                nameservers.append(Nameserver(ns.rstrip("."), tuple(addresses)))
    except dns.exception.DNSException as exc:
        raise PropagationTimeout(
            f"cannot find the nameservers of {zone}: {exc}; set [dns] nameservers to query instead"
        ) from None
    if not nameservers:
        raise PropagationTimeout(f"{zone} has no reachable NS addresses; set [dns] nameservers")
    return nameservers


def _single(server: Server) -> Nameserver:
    return Nameserver(f"{server[0]}:{server[1]}", (server,))


def txt_values(server: Server, fqdn: str, timeout: float = 2.0) -> set[str]:
    """TXT strings at `fqdn` as one server answers them (TCP when the UDP answer is truncated)."""
    query = dns.message.make_query(fqdn, dns.rdatatype.TXT)
    query.flags &= ~dns.flags.RD
    host, port = server
    response = dns.query.udp(query, host, port=port, timeout=timeout)
    if response.flags & dns.flags.TC:
        response = dns.query.tcp(query, host, port=port, timeout=timeout)
    values: set[str] = set()
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            for rdata in rrset:
                values.add(b"".join(rdata.strings).decode())
    return values


TxtQuery = Callable[[Server, str], set[str]]


class _Progress:
    """Which (name, address) pairs showed their values and which addresses are out of reach."""

    def __init__(self, expected: Mapping[str, set[str]], nameservers: Sequence[Nameserver]) -> None:
        self.expected = expected
        self.nameservers = nameservers
        self.seen: set[tuple[str, Server]] = set()
        self.unreachable: dict[Server, str] = {}  # address -> why (errno text)
        self.last_error = ""

    def poll(self, query: TxtQuery) -> None:
        addresses = sorted({a for ns in self.nameservers for a in ns.addresses})
        for fqdn in sorted(self.expected):
            for address in addresses:
                if (fqdn, address) not in self.seen:
                    self._ask(query, fqdn, address)

    def _ask(self, query: TxtQuery, fqdn: str, address: Server) -> None:
        try:
            values = query(address, fqdn)
        except OSError as exc:  # raised before any answer: no route, no IPv6, refused
            self.unreachable[address] = exc.strerror or type(exc).__name__
            self.last_error = f" (last error from {_fmt(address)}: {self.unreachable[address]})"
            return
        except dns.exception.DNSException as exc:  # reachable, but no (usable) answer
            self.unreachable.pop(address, None)
            self.last_error = f" (last error from {_fmt(address)}: {type(exc).__name__})"
            return
        self.unreachable.pop(address, None)
        if self.expected[fqdn] <= values:
            self.seen.add((fqdn, address))

    def missing(self) -> list[str]:
        """What is still not visible: reachable addresses without the values, and nameservers
        none of whose addresses showed them."""
        gaps: set[str] = set()
        for fqdn in self.expected:
            for ns in self.nameservers:
                shown = [a for a in ns.addresses if (fqdn, a) in self.seen]
                waiting = [a for a in ns.addresses if (fqdn, a) not in self.seen and a not in self.unreachable]
                gaps.update(f"{fqdn} at {_fmt(a)}" for a in waiting)
                if not shown and not waiting:
                    why = ", ".join(f"{_fmt(a)}: {self.unreachable[a]}" for a in ns.addresses)
                    gaps.add(f"{fqdn} at {ns.name} (no address reachable from this host: {why})")
        return sorted(gaps)


def _fmt(server: Server) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wait_for_txt(
    expected: Mapping[str, set[str]], servers: Sequence[Nameserver] | Sequence[Server], timeout: float,
    *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    query: TxtQuery = txt_values,
) -> float:
    """Block until every nameserver answers every expected value; returns seconds waited.

    `servers` are nameservers (from `authoritative_servers`) or plain addresses, each
    then a nameserver of its own. `query` asks one address (the network, for tests).
    """
    nameservers = [s if isinstance(s, Nameserver) else _single(s) for s in servers]
    progress = _Progress(expected, nameservers)
    start = clock()
    delay = 0.02
    while True:
        progress.poll(query)
        missing = progress.missing()
        if not missing:
            waited = clock() - start
            if progress.unreachable:
                log.info("skipped nameserver address(es) this host cannot reach: %s",
                         ", ".join(f"{_fmt(a)} ({why})" for a, why in sorted(progress.unreachable.items())))
            log.debug("TXT records visible on %d nameserver(s) after %.2fs", len(nameservers), waited)
            return waited
        if clock() - start >= timeout:
            raise PropagationTimeout(
                f"TXT records not visible after {timeout:.0f}s: {', '.join(missing)}{progress.last_error}"
            )
        sleep(delay)
        delay = min(delay * 1.6, 2.0)
