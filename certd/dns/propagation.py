"""Wait until a zone's authoritative nameservers serve every expected TXT value.

Asking the authoritative servers directly (not a caching resolver) is what the
CA's validator will effectively see; polling them with growing intervals
replaces the fixed sleeps other clients use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

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


def authoritative_servers(zone: str, override: list[str]) -> list[Server]:
    """`override` (host[:port]) if configured, else the addresses of the zone's NS records."""
    if override:
        return [parse_host_port(s) for s in override]
    resolver = dns.resolver.Resolver()
    servers: list[Server] = []
    try:
        ns_names = [r.target.to_text() for r in resolver.resolve(zone, "NS")]
        for ns in ns_names:
            for rdtype in ("A", "AAAA"):
                try:
                    servers += [(r.address, 53) for r in resolver.resolve(ns, rdtype)]
                except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                    continue
    except dns.exception.DNSException as exc:
        raise PropagationTimeout(
            f"cannot find the nameservers of {zone}: {exc}; set [dns] nameservers to query instead"
        ) from None
    if not servers:
        raise PropagationTimeout(f"{zone} has no reachable NS addresses; set [dns] nameservers")
    return servers


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


def wait_for_txt(
    expected: Mapping[str, set[str]], servers: list[Server], timeout: float,
    *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Block until every server answers every expected value; returns seconds waited."""
    start = clock()
    delay = 0.02
    pending = {(fqdn, server) for fqdn in expected for server in servers}
    last_error = ""
    while True:
        for fqdn, server in sorted(pending):
            try:
                if expected[fqdn] <= txt_values(server, fqdn):
                    pending.discard((fqdn, server))
            except (dns.exception.DNSException, OSError) as exc:
                last_error = f" (last error from {server[0]}:{server[1]}: {type(exc).__name__})"
        if not pending:
            waited = clock() - start
            log.debug("TXT records visible on %d server(s) after %.2fs", len(servers), waited)
            return waited
        if clock() - start >= timeout:
            missing = ", ".join(sorted({f"{f} at {s[0]}:{s[1]}" for f, s in pending}))
            raise PropagationTimeout(
                f"TXT records not visible after {timeout:.0f}s: {missing}{last_error}"
            )
        sleep(delay)
        delay = min(delay * 1.6, 2.0)
