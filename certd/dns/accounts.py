"""Several Cloudflare tokens behind one `DnsProvider`: each zone is served by the token that claims it.

`[[cloudflare.accounts]]` gives tokens and the zones each serves (listed, or every zone
the token may list). `CloudflareAccounts` is the provider `open_dns` returns for such a
config: callers keep one provider and pass zones around as before; a zone carries its
account (`Zone.account`), and a zone known only by id (a stored row, an explicit
`zone_id`) is routed to the account claiming that id, else to the one token that can
use it. A zone claimed by two tokens is a `ConfigError` naming both.

Without accounts, the top-level `[cloudflare]` token is the only one and `open_cloudflare`
returns the plain `CloudflareDNS`, exactly as before.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from certd.dns.provider import AccountZones, DnsRecord, Zone, longest_zone, normalize_name
from certd.errors import ConfigError, DNSProviderError

if TYPE_CHECKING:
    from certd.config.cloudflare import CloudflareConfig, ZoneRef
    from certd.dns.cloudflare import CloudflareDNS
    from certd.dns.provider import DnsProvider


@dataclass(frozen=True)
class Account:
    """One token: its label, where it came from, its adapter, and its listed zones (None: discover)."""

    label: str
    source: str
    adapter: "CloudflareDNS"
    listed: tuple["ZoneRef", ...] | None = None


class CloudflareAccounts:
    """A `DnsProvider` over several tokens; zones are looked up once and cached for its life."""

    def __init__(self, accounts: Sequence[Account]) -> None:
        self._accounts = {a.label: a for a in accounts}
        self._lock = threading.Lock()
        self._views: list[AccountZones] | None = None
        self._by_id: dict[str, str] = {}  # zone id -> account label, learned from claims and probes

    # -- claims ----------------------------------------------------------------------
    def _view(self, account: Account) -> AccountZones:
        """The zones `account` claims: its listed ones (ids looked up where missing), or all it can list."""
        listed: list[Zone] = []
        try:
            if account.listed is None:
                listed = [dataclasses.replace(z, account=account.label) for z in account.adapter.zones()]
            else:
                for ref in account.listed:
                    zone_id = ref.id or _listed_zone_id(account, ref.name)
                    listed.append(Zone(id=zone_id, name=ref.name, account=account.label))
        except DNSProviderError as exc:
            return AccountZones(account.label, account.source, tuple(listed), error=str(exc))
        return AccountZones(account.label, account.source, tuple(listed))

    def accounts(self) -> list[AccountZones]:
        """Each token with the zones it claims; listed claims win over discovered ones, two tokens
        discovering one zone is a ConfigError (the config must say which one serves it)."""
        with self._lock:
            if self._views is None:
                views = [self._view(a) for a in self._accounts.values()]
                self._views = _settle_claims(views, self._accounts)
                self._by_id.update({z.id: v.account for v in self._views for z in v.zones if v.account})
            return list(self._views)

    def check_zone(self, zone_id: str, account: str | None) -> str | None:
        if account not in self._accounts:
            return f"no Cloudflare account named {account!r}"
        why = self._accounts[account].adapter.check_zone(zone_id)
        if why is None:
            with self._lock:
                self._by_id.setdefault(zone_id, account)
        return why

    # -- DnsProvider -----------------------------------------------------------------
    def find_zone(self, fqdn: str) -> Zone:
        name = normalize_name(fqdn)
        views = self.accounts()
        best = longest_zone([z for v in views for z in v.zones], name)
        if best is None:
            summary = "; ".join(v.describe() for v in views)
            raise DNSProviderError(f"no active Cloudflare zone for {name}: no configured token can see it "
                                   f"({summary}). Give a token Zone:Read and DNS:Edit on that zone, or "
                                   "list it with its id under that token's [[cloudflare.accounts]] zones")
        return best

    def list_records(self, zone: Zone, *, name: str | None = None, type: str | None = None,
                     content: str | None = None) -> list[DnsRecord]:
        return self._adapter(zone).list_records(zone, name=name, type=type, content=content)

    def create_record(self, zone: Zone, *, type: str, name: str, content: str, ttl: int = 1,
                      proxied: bool | None = None, comment: str | None = None) -> DnsRecord:
        return self._adapter(zone).create_record(zone, type=type, name=name, content=content, ttl=ttl,
                                                 proxied=proxied, comment=comment)

    def update_record(self, zone: Zone, record: DnsRecord, **changes: Any) -> DnsRecord:
        return self._adapter(zone).update_record(zone, record, **changes)

    def delete_record(self, zone: Zone, record_id: str) -> bool:
        return self._adapter(zone).delete_record(zone, record_id)

    # -- routing ---------------------------------------------------------------------
    def _adapter(self, zone: Zone) -> "CloudflareDNS":
        """The token serving `zone`: its account, else the one claiming its id, else the only token
        able to use it (a zone known by id alone: a stored row, an explicit zone_id)."""
        if zone.account in self._accounts:
            return self._accounts[zone.account].adapter
        with self._lock:
            label = self._by_id.get(zone.id)
        if label is None:
            self.accounts()
            with self._lock:
                label = self._by_id.get(zone.id)
        if label is None:
            usable = [a.label for a in self._accounts.values() if a.adapter.check_zone(zone.id) is None]
            if len(usable) > 1:
                raise ConfigError(f"zone {zone.name} (id {zone.id}) is usable by several tokens "
                                  f"({', '.join(usable)}): list it under one [[cloudflare.accounts]] entry")
            if not usable:
                raise DNSProviderError(f"no configured Cloudflare token can use zone {zone.name} (id {zone.id}): "
                                       "give one DNS:Edit on it and list it in that account's zones")
            label = usable[0]
            with self._lock:
                self._by_id[zone.id] = label
        return self._accounts[label].adapter


def _listed_zone_id(account: Account, name: str) -> str:
    """The id of a zone listed by name only: from the zones the token may list."""
    for zone in account.adapter.zones():
        if zone.name == name:
            return zone.id
    raise DNSProviderError(f"zone {name} is listed for the token in {account.source} without its id, and "
                           "the token cannot list it (it needs Zone:Read for that): add id = \"...\" "
                           "(the zone's Overview page) to the entry")


def _settle_claims(views: list[AccountZones], accounts: dict[str, Account]) -> list[AccountZones]:
    """Discovered zones another account lists go to that account; one discovered by two is an error."""
    listed_names = {z.name for v in views if accounts[str(v.account)].listed is not None for z in v.zones}
    owner: dict[str, AccountZones] = {}
    settled: list[AccountZones] = []
    for view in views:
        discovering = accounts[str(view.account)].listed is None
        zones = tuple(z for z in view.zones if not (discovering and z.name in listed_names))
        for zone in zones:
            other = owner.setdefault(zone.name, view)
            if other is not view:
                raise ConfigError(
                    f"zone {zone.name} is claimed by two Cloudflare tokens: account {other.account!r} "
                    f"(token in {other.source}) and account {view.account!r} (token in {view.source}) "
                    "both can list it; list it under the `zones` of the one that should serve it")
        settled.append(dataclasses.replace(view, zones=zones))
    return settled


def open_cloudflare(cf: "CloudflareConfig") -> "DnsProvider":
    """The provider for `[cloudflare]`: the plain adapter for one token, the router for several."""
    from certd.dns.cloudflare import CloudflareDNS, from_config
    from certd.secrets import read_secret

    if not cf.accounts:
        return from_config(cf)
    accounts: list[Account] = []
    if cf.has_default_token:
        from certd.config.cloudflare import DEFAULT_ACCOUNT

        accounts.append(Account(DEFAULT_ACCOUNT, cf.token_source, from_config(cf)))
    for entry in cf.accounts:
        token = read_secret(env=entry.api_token_env, file=entry.api_token_file,
                            what=f"Cloudflare API token of account {entry.label!r}")
        assert token is not None
        adapter = CloudflareDNS(token, base_url=cf.base_url, max_retries=cf.max_retries, timeout=cf.timeout,
                                source=entry.source)
        accounts.append(Account(entry.label, entry.source, adapter,
                                tuple(entry.zones) if entry.zones is not None else None))
    return CloudflareAccounts(accounts)
