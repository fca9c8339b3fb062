"""Follow the CNAME chain of a challenge name on authoritative nameservers (the I/O behind
certd.dns.delegation).

The CA's validator follows `_acme-challenge.<name>` wherever its CNAME points, so certd
asks the same servers the propagation check asks: `[dns] nameservers` when set, else
each name's own zone's NS (found through the system resolver). Only authoritative
(AA) answers count; a name no server answers for ends the chain as "failed".

A CNAME at the challenge name that a wildcard synthesizes (`*.example.com CNAME
example.com` covers `_acme-challenge.example.com`) is no delegation: a TXT written at
the challenge name itself overrides the wildcard, as certd always did. It is told
apart by asking for a sibling name that cannot exist: the wildcard answers that too.
"""

from __future__ import annotations

import logging
import secrets

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from certd.config.dns import parse_host_port
from certd.dns.delegation import MAX_CNAME_HOPS, CnameChain
from certd.dns.propagation import Server, authoritative_servers

log = logging.getLogger(__name__)


class LookupFailed(Exception):
    """No authoritative answer for a name (message says from where and why)."""


def _servers_for(name: str, override: list[str]) -> list[Server]:
    if override:
        return [parse_host_port(s) for s in override]
    try:
        zone = dns.resolver.zone_for_name(name).to_text().rstrip(".")
        nameservers = authoritative_servers(zone, [])
    except Exception as exc:  # noqa: BLE001 - dnspython and PropagationTimeout alike: say why
        raise LookupFailed(f"cannot find the nameservers of {name}: {exc}") from None
    return [address for ns in nameservers for address in ns.addresses]


def _ask(server: Server, name: str, timeout: float) -> dns.message.Message:
    query = dns.message.make_query(name, dns.rdatatype.CNAME)
    query.flags &= ~dns.flags.RD
    host, port = server
    response = dns.query.udp(query, host, port=port, timeout=timeout)
    if response.flags & dns.flags.TC:
        response = dns.query.tcp(query, host, port=port, timeout=timeout)
    return response


def cname_step(name: str, override: list[str], timeout: float = 3.0) -> tuple[str | None, str | None]:
    """(CNAME target of `name` or None, zone apex from the SOA when there is no CNAME) as the
    first authoritative server to answer says."""
    problems: list[str] = []
    qname = dns.name.from_text(name)
    for server in _servers_for(name, override):
        try:
            response = _ask(server, name, timeout)
        except (OSError, dns.exception.DNSException) as exc:
            problems.append(f"{server[0]}:{server[1]}: {type(exc).__name__}")
            continue
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) or not response.flags & dns.flags.AA:
            problems.append(f"{server[0]}:{server[1]}: {dns.rcode.to_text(rcode)}"
                            + ("" if response.flags & dns.flags.AA else " (not authoritative)"))
            continue
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.CNAME and rrset.name == qname:
                return rrset[0].target.to_text().rstrip(".").lower(), None
        apex = next((r.name.to_text().rstrip(".").lower() for r in response.authority
                     if r.rdtype == dns.rdatatype.SOA), None)
        return None, apex
    raise LookupFailed(f"no authoritative answer for {name} ({'; '.join(problems) or 'no nameserver'})")


def observe_chain(start: str, override: list[str], *, timeout: float = 3.0,
                  max_hops: int = MAX_CNAME_HOPS) -> CnameChain:
    """The CNAME chain from `start`, bounded by `max_hops`, loops detected."""
    start = start.lower().rstrip(".")
    targets: list[str] = []
    name = start
    while True:
        try:
            target, apex = cname_step(name, override, timeout)
        except LookupFailed as exc:
            log.debug("CNAME lookup of %s stopped: %s", name, exc)
            return CnameChain(start, tuple(targets), "failed", error=str(exc))
        if target is None:
            return CnameChain(start, tuple(targets), "end", apex=apex)
        if not targets and _wildcard_answer(start, target, override, timeout):
            log.debug("%s: CNAME %s comes from a wildcard; not a delegation", start, target)
            return CnameChain(start, (), "end")
        looped = target == start or target in targets
        targets.append(target)
        if looped:
            return CnameChain(start, tuple(targets), "loop")
        if len(targets) >= max_hops:
            return CnameChain(start, tuple(targets), "too_long")
        name = target


def _wildcard_answer(name: str, target: str, override: list[str], timeout: float) -> bool:
    """Whether a made-up sibling of `name` gets the same CNAME (then a wildcard made both)."""
    sibling = f"_certd-probe-{secrets.token_hex(4)}.{name.partition('.')[2]}"
    try:
        return cname_step(sibling, override, timeout)[0] == target
    except LookupFailed:
        return False


def zone_apex(name: str, override: list[str], timeout: float = 3.0) -> str | None:
    """The zone `name` is in, per its authoritative servers' SOA (None when they do not say)."""
    try:
        target, apex = cname_step(name, override, timeout)
    except LookupFailed:
        return None
    return apex if target is None else None
