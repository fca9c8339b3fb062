"""Where a name's DNS-01 TXT record goes, and which credential writes it: a pure decision.

In: the name's challenge settings (certd.config.certificates.ChallengeConfig), the CNAME
chain its `_acme-challenge` name has on its authoritative nameservers (observed by
certd.dns.cnames), and the zones each credential serves (`DnsProvider.accounts()`).
Out: the record name, zone and account, or a `DelegationError` naming the name, the
target and what is missing. certd decides this before an order is placed, so a broken
delegation creates nothing (no order, no record).

The rules, in order:
- `domain_alias` puts the TXT at exactly that name, `challenge_alias` at
  `_acme-challenge.<alias>`; the CNAME the user added must end there (else error, with the
  line to add at their DNS host). Without either, the TXT goes where the chain ends (the
  challenge name itself when there is no CNAME).
- A loop or an over-long chain is an error; a lookup that failed before any CNAME was
  seen is taken as "no CNAME" (what certd did before it looked), with a note.
- The zone: `zone_id` (the credential holding that id), `zone` (by name), else the
  longest zone any credential serves. The zone must contain the record name, and when the
  record name's nameservers say it is in a deeper zone that no credential serves, the
  record would be invisible: error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from certd.config.certificates import ChallengeConfig
from certd.dns.provider import AccountZones, Zone, zone_covers
from certd.errors import CertdError

MAX_CNAME_HOPS = 8  # more than any sane delegation; the sandbox DNS server chases as far
README_SECTION = "README: Names whose DNS is not on Cloudflare"

ChainOutcome = Literal["end", "loop", "too_long", "failed"]


class DelegationError(CertdError):
    """A name's challenge record has nowhere certd can write it (found before any order)."""


@dataclass(frozen=True)
class CnameChain:
    """What the authoritative nameservers say `_acme-challenge.<name>` leads to."""

    start: str
    targets: tuple[str, ...] = ()  # each CNAME target, in order
    outcome: ChainOutcome = "end"
    apex: str | None = None  # with "end": the zone of the last name, per its nameservers' SOA
    error: str | None = None  # with "failed": why the next lookup failed

    @property
    def last(self) -> str:
        return self.targets[-1] if self.targets else self.start

    def describe(self) -> str:
        return " -> ".join((self.start, *self.targets))


@dataclass(frozen=True)
class ChallengeTarget:
    """Where one challenge name's TXT goes and who writes it."""

    challenge_name: str  # _acme-challenge.<base name>: what the CA asks for
    record_name: str  # where the TXT is written (the challenge name unless delegated)
    zone: Zone  # with `account` set when the provider has several credentials
    source: str  # the credential's source, for messages
    via: tuple[str, ...] = ()  # the CNAME targets followed
    notes: tuple[str, ...] = field(default=())  # what could not be checked (logged as warnings)

    @property
    def delegated(self) -> bool:
        return self.record_name != self.challenge_name

    def describe(self) -> str:
        where = f"zone {self.zone.name}" + (f" (account {self.zone.account})" if self.zone.account else "")
        if not self.delegated:
            return f"{self.challenge_name} in {where}"
        return f"{self.challenge_name} -> {self.record_name} in {where}"


def challenge_name(domain: str) -> str:
    """A wildcard and its base name share `_acme-challenge.<base>`."""
    return "_acme-challenge." + domain.removeprefix("*.")


def intended_name(settings: ChallengeConfig) -> str | None:
    """The record name the settings fix (None: follow the CNAME chain)."""
    if settings.domain_alias:
        return settings.domain_alias
    if settings.challenge_alias:
        return "_acme-challenge." + settings.challenge_alias
    return None


def record_name(domain: str, settings: ChallengeConfig, chain: CnameChain) -> tuple[str, tuple[str, ...]]:
    """Where the TXT goes per settings and the observed chain, plus notes; DelegationError if nowhere."""
    start = challenge_name(domain)
    if chain.outcome == "loop":
        raise DelegationError(f"{domain}: the CNAME chain of {start} loops ({chain.describe()}): the CA "
                              "could never find the challenge record; fix the CNAME records")
    if chain.outcome == "too_long":
        raise DelegationError(f"{domain}: the CNAME chain of {start} is longer than {MAX_CNAME_HOPS} "
                              f"({chain.describe()}): point {start} at the final name directly")
    notes: list[str] = []
    observed: str | None = chain.last
    if chain.outcome == "failed":
        if chain.targets:
            notes.append(f"could not look past {chain.last} ({chain.error}); writing the TXT there")
        else:
            observed = None
            notes.append(f"could not look up {start} on its nameservers ({chain.error}); "
                         "assuming it has no CNAME")
    intended = intended_name(settings)
    if intended is None:
        return observed or start, tuple(notes)
    if observed is not None and observed != intended:
        seen = f"is a CNAME to {chain.last}" if chain.targets else "has no CNAME"
        if chain.targets and intended in chain.targets:
            seen = f"leads on past {intended} ({chain.describe()})"
        raise DelegationError(
            f"{domain}: config puts the challenge TXT at {intended}, but {start} {seen}, so the CA "
            f"would not look there; add at the DNS host of {domain.removeprefix('*.')}: "
            f"`{start}. CNAME {intended}.` ({README_SECTION})")
    return intended, tuple(notes)


def _holders(accounts: Sequence[AccountZones], match: Callable[[Zone], bool]) -> list[tuple[AccountZones, Zone]]:
    return [(view, zone) for view in accounts for zone in view.zones if match(zone)]


def _accounts_summary(accounts: Sequence[AccountZones]) -> str:
    return "; ".join(view.describe() for view in accounts) or "no DNS credential configured"


def _one(domain: str, what: str, holders: list[tuple[AccountZones, Zone]]) -> tuple[AccountZones, Zone]:
    accounts = {(view.account, view.source) for view, _ in holders}
    if len(accounts) > 1:
        names = " and ".join(f"the token in {source}" for _, source in sorted(accounts, key=str))
        raise DelegationError(f"{domain}: {what} is claimed by two tokens: {names}; a zone has one "
                              "token: list it under one [[cloudflare.accounts]] entry only")
    return holders[0]


def choose_zone(domain: str, record: str, settings: ChallengeConfig, accounts: Sequence[AccountZones],
                *, apex: str | None = None, usable: Sequence[tuple[str | None, str]] = (),
                denied: Sequence[tuple[str | None, str, str]] = (), delegated_from: str | None = None,
                ) -> tuple[Zone, str]:
    """The zone (tagged with its account) that receives `record`, and the credential's source.

    `usable`/`denied`: (account, zone id[, why]) from probing explicit zone ids that no
    credential lists. `apex`: the zone the record name's nameservers report, if known.
    """
    how = f"{delegated_from} is delegated to {record}, but " if delegated_from else ""
    if settings.zone_id:
        zone_id = settings.zone_id
        holders = _holders(accounts, lambda z: z.id == zone_id)
        for account, probed in usable:
            if probed == zone_id and all(view.account != account for view, _ in holders):
                view = next(v for v in accounts if v.account == account)
                name = settings.zone or apex
                if name is None:
                    raise DelegationError(
                        f"{domain}: cannot tell the name of zone id {zone_id} (its token may not list "
                        f"zones and the nameservers of {record} did not say): set zone = \"...\" next "
                        "to zone_id")
                holders.append((view, Zone(id=zone_id, name=name, account=account)))
        if not holders:
            why = "; ".join(f"the token in {_source(accounts, a)}: {reason}" for a, zid, reason in denied
                            if zid == zone_id) or _accounts_summary(accounts)
            raise DelegationError(f"{domain}: {how}no Cloudflare token can use zone id {zone_id} ({why}); "
                                  "give the token DNS:Edit on that zone, or fix zone_id")
        view, zone = _one(domain, f"zone id {zone_id}", holders)
        refused = [why for account, zid, why in denied if (account, zid) == (view.account, zone_id)]
        if refused:
            raise DelegationError(f"{domain}: {how}the token in {view.source} cannot use zone id {zone_id} "
                                  f"({refused[0]}); give it DNS:Edit on that zone, or fix zone_id")
        if settings.zone and zone.name != settings.zone:
            raise DelegationError(f"{domain}: zone id {zone_id} is zone {zone.name}, not {settings.zone} "
                                  "as config says")
    elif settings.zone:
        wanted = settings.zone
        holders = _holders(accounts, lambda z: z.name == wanted)
        if not holders:
            raise DelegationError(
                f"{domain}: {how}no Cloudflare token serves zone {wanted} ({_accounts_summary(accounts)}); "
                f"give a token Zone:Read and DNS:Edit on {wanted}, or set zone_id (then DNS:Edit is enough)")
        view, zone = _one(domain, f"zone {wanted}", holders)
    else:
        covering = _holders(accounts, lambda z: zone_covers(z.name, record))
        if not covering:
            hint = "" if delegated_from else (
                f", or delegate it: add `{record}. CNAME _acme-challenge.{domain.removeprefix('*.')}."
                f"<a zone a token can edit>.` at the name's DNS host ({README_SECTION})")
            who = "the token cannot" if len(accounts) == 1 else "no token can"
            raise DelegationError(
                f"{domain}: {how}no Cloudflare token can edit a zone containing {record}: {who} see it "
                f"({_accounts_summary(accounts)}). Give a token Zone:Read and DNS:Edit on that zone, "
                f"or list the zone with its zone_id under [[cloudflare.accounts]]{hint}")
        longest = max(len(z.name) for _, z in covering)
        view, zone = _one(domain, f"zone {next(z.name for _, z in covering if len(z.name) == longest)}",
                          [(v, z) for v, z in covering if len(z.name) == longest])
    if not zone_covers(zone.name, record):
        raise DelegationError(f"{domain}: {how}{record} is not in zone {zone.name}; the zone settings "
                              "name the zone that receives the TXT record")
    if apex is not None and apex != zone.name:
        why = (f"a deeper zone that no Cloudflare token serves; give a token DNS:Edit on {apex}, or point "
               "the CNAME into a zone a token can edit" if zone_covers(zone.name, apex) else
               f"not Cloudflare's zone {zone.name}: is that zone active, with its nameservers set at the "
               "registrar?")
        raise DelegationError(f"{domain}: {how}the nameservers of {record} serve it from zone {apex}, "
                              f"so a TXT written in zone {zone.name} would not be seen: {apex} is {why}")
    return replace(zone, account=view.account), view.source


def _source(accounts: Sequence[AccountZones], account: str | None) -> str:
    return next((v.source for v in accounts if v.account == account), "the DNS provider")


def resolve_challenge(domain: str, settings: ChallengeConfig, chain: CnameChain,
                      accounts: Sequence[AccountZones], *, usable: Sequence[tuple[str | None, str]] = (),
                      denied: Sequence[tuple[str | None, str, str]] = ()) -> ChallengeTarget:
    """Where `domain`'s challenge TXT goes, or a DelegationError saying why it cannot go anywhere."""
    record, notes = record_name(domain, settings, chain)
    start = challenge_name(domain)
    apex = chain.apex if chain.outcome == "end" and chain.last == record else None
    zone, source = choose_zone(domain, record, settings, accounts, apex=apex, usable=usable, denied=denied,
                               delegated_from=start if record != start else None)
    via = chain.targets if record in chain.targets else ((record,) if record != start else ())
    listing = [f"{v.describe()}" for v in accounts if v.error]
    if listing and not (settings.zone or settings.zone_id):
        notes = (*notes, "zones of some tokens are unknown, the zone was chosen without them: "
                 + "; ".join(listing))
    return ChallengeTarget(challenge_name=start, record_name=record, zone=zone, source=source, via=via,
                           notes=notes)
