"""DNS checks: the name resolves, its Cloudflare record is DNS only and points where config says,
the local resolver does not drop private answers (DNS-rebind protection), and each name's
`_acme-challenge` leads to where certd will write its TXT record."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from certd.doctor.base import FAIL, PASS, WARN, Check

if TYPE_CHECKING:
    from certd.config import Config
    from certd.config.certificates import ChallengeConfig
    from certd.dns.delegation import CnameChain
    from certd.dns.provider import AccountZones, DnsProvider

CHALLENGE_FIX = ("add the CNAME the message names at the name's DNS host, or fix the certificate's "
                 "challenge_alias/domain_alias/zone/zone_id (README: Names whose DNS is not on Cloudflare)")


@dataclass(frozen=True)
class Resolution:
    addresses: tuple[str, ...]
    error: str | None
    resolver: str


@dataclass(frozen=True)
class RecordView:
    type: str
    content: str
    proxied: bool


@dataclass(frozen=True)
class CloudflareView:
    zone: str | None
    records: tuple[RecordView, ...]
    error: str | None = None


def _is_private(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_private or ip.is_loopback or ip.is_link_local


# -- I/O -------------------------------------------------------------------
def resolve(host: str, nameservers: list[str], timeout: float = 5.0) -> Resolution:
    """A and AAAA through the given servers (host or host:port), else the system resolver."""
    import dns.exception
    import dns.nameserver
    import dns.resolver

    from certd.config.dns import parse_host_port

    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_host_port(ns)) for ns in nameservers]
        where = ", ".join(nameservers)
    else:
        resolver = dns.resolver.Resolver()
        where = "system resolver (" + ", ".join(str(n) for n in resolver.nameservers) + ")"
    resolver.lifetime = timeout
    addresses: list[str] = []
    errors: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(host, rdtype)
            addresses += [r.to_text() for r in answer]
        except dns.resolver.NXDOMAIN:
            errors.append("NXDOMAIN (the resolver says the name does not exist)")
            break
        except dns.resolver.NoAnswer:
            continue
        except dns.resolver.NoNameservers as exc:
            errors.append(f"every server failed or refused ({exc})")
        except dns.exception.Timeout:
            errors.append("timed out")
    error = None if addresses else ("; ".join(dict.fromkeys(errors)) or "no A or AAAA record in the answer")
    return Resolution(tuple(addresses), error, where)


def cloudflare_view(dns_api: "DnsProvider", host: str) -> CloudflareView:
    from certd.errors import DNSProviderError

    try:
        zone = dns_api.find_zone(host)
        records = [r for r in dns_api.list_records(zone, name=host) if r.type in ("A", "AAAA", "CNAME")]
    except DNSProviderError as exc:
        return CloudflareView(None, (), str(exc))
    return CloudflareView(zone.name, tuple(RecordView(r.type, r.content, r.proxied) for r in records))


def expected_addresses(config: "Config", host: str) -> list[str] | None:
    """Fixed addresses `[[hosts]]` gives for `host` (None when config says nothing fixed)."""
    for entry in getattr(config, "hosts", []) or []:
        if getattr(entry, "name", None) == host and getattr(entry, "address", None):
            address = entry.address
            return list(address) if isinstance(address, list) else [address]
    return None


def challenge_checks(config: "Config", host: str, dns_api: "DnsProvider | None") -> list[Check]:
    """One check per challenge name of each certificate covering `host`: the CNAME chain its
    authoritative nameservers serve, and whether certd can write at its end."""
    from certd.dns.challenge_plan import observe_all, probe_zone_ids, settings_by_challenge
    from certd.errors import CertdError

    from certd.doctor.names import covers

    certs = [c for c in config.certificates if any(covers(d, host) for d in c.domains)]
    wanted = {name: pair for cert in certs for name, pair in settings_by_challenge(cert).items()}
    if not wanted:
        return []
    chains = observe_all(wanted, config.dns.nameservers)
    accounts: list[AccountZones] | None = None
    usable: list[tuple[str | None, str]] = []
    denied: list[tuple[str | None, str, str]] = []
    if dns_api is not None:
        try:
            accounts = dns_api.accounts()
            usable, denied = probe_zone_ids(dns_api, accounts,
                                            (s.zone_id for _, s in wanted.values() if s.zone_id))
        except CertdError as exc:
            return [Check("dns-acme-challenge", FAIL, f"cannot tell where challenge records go: {exc}",
                          CHALLENGE_FIX)]
    return [evaluate_challenge(domain, settings, chains[name], accounts, usable, denied)
            for name, (domain, settings) in wanted.items()]


# -- decisions (pure) --------------------------------------------------------
def evaluate_challenge(domain: str, settings: "ChallengeConfig", chain: "CnameChain",
                       accounts: "list[AccountZones] | None", usable: Sequence[tuple[str | None, str]] = (),
                       denied: Sequence[tuple[str | None, str, str]] = ()) -> Check:
    """PASS when the chain leads where certd writes (and a token can write there)."""
    from certd.dns.delegation import DelegationError, record_name, resolve_challenge

    path = chain.describe() if chain.targets else f"{chain.start} (no CNAME)"
    try:
        if accounts is None:
            record, _ = record_name(domain, settings, chain)
            return Check("dns-acme-challenge", WARN,
                         f"{path}: certd would write the TXT at {record}; which zone and token could not "
                         "be checked (no DNS provider configured)",
                         "set [cloudflare] api_token_env or api_token_file so doctor can read the zones")
        target = resolve_challenge(domain, settings, chain, accounts, usable=usable, denied=denied)
    except DelegationError as exc:
        return Check("dns-acme-challenge", FAIL, str(exc), CHALLENGE_FIX)
    status = WARN if target.notes else PASS
    message = (f"{path}: certd writes the TXT at {target.record_name} in zone {target.zone.name} "
               f"(token in {target.source})")
    return Check("dns-acme-challenge", status, message + "".join(f"; {n}" for n in target.notes))



def evaluate_resolution(host: str, res: Resolution) -> Check:
    if res.addresses:
        return Check("dns-resolves", PASS, f"{host} resolves to {', '.join(res.addresses)} via {res.resolver}")
    return Check("dns-resolves", FAIL, f"{host} does not resolve via {res.resolver}: {res.error}",
                 "publish an A record for the name (DNS only), e.g. with [[hosts]] in certd.toml, "
                 "and check that this machine uses a resolver that can see it")


def evaluate_cloudflare(host: str, view: CloudflareView | None, expected: list[str] | None) -> Check:
    if view is None:
        return Check("dns-cloudflare", WARN, "Cloudflare record not checked: no API token configured",
                     "set [cloudflare] api_token_env or api_token_file so doctor can read the zone")
    if view.error:
        return Check("dns-cloudflare", FAIL, f"cannot read the Cloudflare record of {host}: {view.error}",
                     "give the token Zone:Read and DNS:Read on the zone")
    if not view.records:
        return Check("dns-cloudflare", FAIL, f"zone {view.zone} has no A/AAAA/CNAME record for {host}",
                     "add the record as DNS only (gray cloud) or list the host in [[hosts]]")
    proxied = [r for r in view.records if r.proxied]
    if proxied:
        return Check(
            "dns-cloudflare", FAIL,
            f"{host} is proxied by Cloudflare (orange cloud): the name answers with Cloudflare's edge "
            f"addresses, not {', '.join(r.content for r in proxied)}, so chargers never reach this server",
            "set the record to DNS only (gray cloud) in the Cloudflare dashboard, or let certd manage "
            "it with [[hosts]]",
        )
    contents = sorted(r.content for r in view.records)
    if expected is not None and set(expected) != set(contents):
        return Check("dns-cloudflare", FAIL,
                     f"{host} points to {', '.join(contents)} but config says {', '.join(expected)}",
                     "run `certd dns sync` (or fix the record) so it points at this server")
    return Check("dns-cloudflare", PASS, f"{host} is DNS only (not proxied) and points to {', '.join(contents)}")


def evaluate_rebind(host: str, res: Resolution, record_addresses: list[str]) -> Check:
    private = [a for a in record_addresses if _is_private(a)]
    if not private:
        return Check("dns-rebind", PASS, f"{host} has no private address: DNS-rebind protection does not apply")
    if not res.addresses:
        return Check(
            "dns-rebind", FAIL,
            f"{host} points to the private address {', '.join(private)} but the local resolver "
            f"({res.resolver}) gives no answer: it probably drops public names with private addresses "
            "(DNS-rebind protection)",
            f"allow the domain on the resolver: dnsmasq `rebind-domain-ok=/{host}/`, Pi-hole the same in "
            "a dnsmasq snippet, Unbound `private-domain:`; or use a local DNS entry",
        )
    if set(res.addresses) != set(record_addresses):
        return Check("dns-rebind", WARN,
                     f"the local resolver answers {', '.join(res.addresses)} but Cloudflare has "
                     f"{', '.join(record_addresses)}",
                     "a local override or a stale cache: flush it or fix the local DNS entry")
    return Check("dns-rebind", PASS, f"the local resolver returns the private address {', '.join(private)}")
