"""Before an order: where each challenge TXT of a certificate goes (the I/O around certd.dns.delegation).

Asks the authoritative nameservers for each `_acme-challenge` name's CNAME chain, the
provider for the zones each credential serves, and (for explicit `zone_id`s) whether
a credential can use that zone; then decides with the pure `resolve_challenge`. Every
name's problem is reported at once, before anything is created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from certd.config.certificates import ChallengeConfig
from certd.dns.cnames import observe_chain, zone_apex
from certd.dns.delegation import (
    ChallengeTarget, CnameChain, DelegationError, challenge_name, choose_zone, resolve_challenge,
)
from certd.dns.provider import AccountZones, DnsProvider, Zone

if TYPE_CHECKING:
    from certd.config import CertificateConfig, Config

log = logging.getLogger(__name__)

ChainObserver = Callable[[str, list[str]], CnameChain]
Probes = tuple[list[tuple[str | None, str]], list[tuple[str | None, str, str]]]


def probe_zone_ids(provider: DnsProvider, accounts: list[AccountZones], zone_ids: Iterable[str]) -> Probes:
    """For each explicit zone id: which credentials can use it. The one listing it is asked; when
    none lists it, every credential is (a token without Zone:Read lists nothing)."""
    usable: list[tuple[str | None, str]] = []
    denied: list[tuple[str | None, str, str]] = []
    for zone_id in sorted(set(zone_ids)):
        holders = [v for v in accounts if any(z.id == zone_id for z in v.zones)]
        for view in holders or accounts:
            why = provider.check_zone(zone_id, view.account)
            if why is None:
                usable.append((view.account, zone_id))
            else:
                denied.append((view.account, zone_id, why))
    return usable, denied


def settings_by_challenge(cert: "CertificateConfig") -> dict[str, tuple[str, ChallengeConfig]]:
    """Challenge name -> (the first domain using it, its settings): a wildcard shares its base's."""
    found: dict[str, tuple[str, ChallengeConfig]] = {}
    for domain in cert.domains:
        found.setdefault(challenge_name(domain), (domain, cert.challenge_settings(domain)))
    return found


def observe_all(names: Iterable[str], nameservers: list[str],
                observe: ChainObserver = observe_chain) -> dict[str, CnameChain]:
    names = list(names)
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(names))), thread_name_prefix="cname") as pool:
        return dict(zip(names, pool.map(lambda n: observe(n, nameservers), names), strict=True))


def plan_challenges(config: "Config", provider: DnsProvider, cert: "CertificateConfig", *,
                    observe: ChainObserver = observe_chain) -> dict[str, ChallengeTarget]:
    """Challenge name -> where its TXT goes, for every name of `cert`; DelegationError listing every
    name that has nowhere to go."""
    wanted = settings_by_challenge(cert)
    chains = observe_all(wanted, config.dns.nameservers, observe)
    accounts = provider.accounts()
    usable, denied = probe_zone_ids(provider, accounts,
                                    (s.zone_id for _, s in wanted.values() if s.zone_id))
    targets: dict[str, ChallengeTarget] = {}
    problems: list[str] = []
    for name, (domain, settings) in wanted.items():
        try:
            targets[name] = resolve_challenge(domain, settings, chains[name], accounts,
                                              usable=usable, denied=denied)
        except DelegationError as exc:
            problems.append(str(exc))
    if problems:
        raise DelegationError("\n".join(problems))
    for target in targets.values():
        for note in target.notes:
            log.warning("%s: %s", target.challenge_name, note)
        if target.delegated:
            log.info("%s: TXT record delegated to %s (token in %s)", cert.name, target.describe(), target.source)
    return targets


def explicit_zone(provider: DnsProvider, name: str, *, zone: str | None, zone_id: str | None,
                  nameservers: list[str]) -> Zone:
    """The zone config names for `name` (a `[[hosts]]` entry's zone / zone_id), checked as a
    challenge's would be: the credential can use it and it contains the name."""
    settings = ChallengeConfig(zone=zone, zone_id=zone_id)
    accounts = provider.accounts()
    usable, denied = probe_zone_ids(provider, accounts, [zone_id] if zone_id else [])
    apex = zone_apex(name, nameservers) if zone_id and not zone else None
    chosen, _ = choose_zone(name, name, settings, accounts, apex=apex, usable=usable, denied=denied)
    return chosen
