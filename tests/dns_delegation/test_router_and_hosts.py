"""Several tokens behind one provider (certd.dns.accounts), Cloudflare's answers explained per token,
`[[hosts]]` with explicit zones, and the doctor's `_acme-challenge` check: on the sandbox, no CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from certd.config import Config, parse_config
from certd.dns.accounts import CloudflareAccounts
from certd.dns.challenges import Dns01Records, cleanup_leftover_records
from certd.dns.cloudflare import CloudflareDNS
from certd.dns.provider import Zone
from certd.dns.registry import open_dns
from certd.dns.sync import sync_hosts
from certd.doctor import dns_checks
from certd.doctor.base import FAIL, PASS, WARN
from certd.errors import DNSProviderError
from certd.sandbox import SandboxWorld
from certd.sandbox.certd_config import toml_str
from certd.store.db import make_engine, upgrade

DNS_EDIT_ONLY = {"dns:edit"}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    url = f"sqlite:///{tmp_path / 'certd.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def config(world: SandboxWorld, tmp_path: Path, cloudflare: str, rest: str = "") -> Config:
    return parse_config(f"""
state_dir = {toml_str(tmp_path)}
[cloudflare]
base_url = {toml_str(world.base_url)}
max_retries = 0
{cloudflare}
[dns]
nameservers = [{toml_str(world.dns_addr)}]
{rest}
""")


# -- Cloudflare's answers, naming the token's source ------------------------------------------
def test_each_refusal_names_the_token_source_never_the_token(cf_world: SandboxWorld) -> None:
    source = "environment variable CF_SPARE"
    not_a_token = CloudflareDNS("abc def", base_url=cf_world.base_url, max_retries=0, source=source)
    with pytest.raises(DNSProviderError) as info:
        not_a_token.zones()
    assert f"could not read the API token in {source} as an API token" in str(info.value)
    assert "6003" in str(info.value) and "6111" in str(info.value) and "abc def" not in str(info.value)

    revoked = CloudflareDNS("revoked-token", base_url=cf_world.base_url, max_retries=0, source=source)
    assert "invalid, expired or revoked" in (revoked.check_zone(cf_world.zone_ids["example.com"]) or "")

    cf_world.emulator.add_token("net-only", zones=["example.net"])
    scoped = CloudflareDNS("net-only", base_url=cf_world.base_url, max_retries=0, source=source)
    why = scoped.check_zone(cf_world.zone_ids["example.com"]) or ""
    assert "10000" in why and f"the API token in {source} lacks" in why and "net-only" not in why
    assert scoped.check_zone(cf_world.zone_ids["example.net"]) is None


# -- routing ------------------------------------------------------------------------------------
def test_listed_zones_win_over_discovered_ones_and_stored_ids_find_their_token(
        cf_world: SandboxWorld, tmp_path: Path, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    cf_world.emulator.add_token("net-edit", zones=["example.net"], permissions=DNS_EDIT_ONLY)
    monkeypatch.setenv("CF_ALL", cf_world.token)  # discovers example.com and example.net
    monkeypatch.setenv("CF_NET", "net-edit")
    net_id = cf_world.zone_ids["example.net"]
    cfg = config(cf_world, tmp_path, f"""
[[cloudflare.accounts]]
name = "all"
api_token_env = "CF_ALL"
[[cloudflare.accounts]]
name = "net"
api_token_env = "CF_NET"
zones = [{{ name = "example.net", id = "{net_id}" }}]
""")
    provider = open_dns(cfg)
    assert isinstance(provider, CloudflareAccounts)
    views = {v.account: [z.name for z in v.zones] for v in provider.accounts()}
    assert views == {"all": ["example.com"], "net": ["example.net"]}
    assert provider.find_zone("www.example.net") == Zone(net_id, "example.net", account="net")

    # A stored row knows only the zone id (e.g. written before accounts were configured): the
    # router finds the token claiming it.
    records = Dns01Records(provider, engine, None)
    records.present("_acme-challenge.www.example.net", "v" * 43)
    net_token = {r.token_id for r in cf_world.emulator.writes()}
    assert len(net_token) == 1
    fresh = open_dns(cfg)
    assert fresh.list_records(Zone(net_id, "example.net"), type="TXT")  # no account on the zone
    assert cleanup_leftover_records(fresh, engine) == 1
    assert {r.token_id for r in cf_world.emulator.writes()} == net_token
    assert [r for r in cf_world.emulator.records() if r["type"] == "TXT"] == []


def test_a_zone_listed_without_id_needs_zone_read(cf_world: SandboxWorld, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cf_world.emulator.add_token("blind", zones=["example.net"], permissions=DNS_EDIT_ONLY)
    monkeypatch.setenv("CF_BLIND", "blind")
    cfg = config(cf_world, tmp_path, """
[[cloudflare.accounts]]
api_token_env = "CF_BLIND"
zones = ["example.net"]
""")
    [view] = open_dns(cfg).accounts()
    assert view.zones == () and view.error is not None
    assert "environment variable CF_BLIND" in view.error and 'add id = "..."' in view.error


# -- [[hosts]] with an explicit zone --------------------------------------------------------------
def test_a_host_with_a_zone_id_syncs_with_a_token_that_cannot_list_zones(
        cf_world: SandboxWorld, tmp_path: Path, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    cf_world.emulator.add_token("host-edit", zones=["example.net"], permissions=DNS_EDIT_ONLY)
    monkeypatch.setenv("CF_HOSTS", "host-edit")
    host = '[[hosts]]\nname = "wallbox.example.net"\naddress = "192.168.1.100"\n'
    cloudflare = 'api_token_env = "CF_HOSTS"'

    blind = config(cf_world, tmp_path, cloudflare, host)
    [action] = sync_hosts(blind, engine, open_dns(blind), apply=True).plan.actions
    assert action.kind == "error" and "Zone:Read" in action.reason

    explicit = config(cf_world, tmp_path, cloudflare, host + f'zone_id = "{cf_world.zone_ids["example.net"]}"\n')
    report = sync_hosts(explicit, engine, open_dns(explicit), apply=True)
    assert report.outcome == "changed", report
    [record] = [r for r in cf_world.emulator.records("example.net") if r["type"] == "A"]
    assert (record["name"], record["content"], record["proxied"]) == ("wallbox.example.net", "192.168.1.100", False)

    wrong = config(cf_world, tmp_path, cloudflare, host.replace("example.net", "example.com")
                   + f'zone_id = "{cf_world.zone_ids["example.com"]}"\n')
    actions = sync_hosts(wrong, engine, open_dns(wrong), apply=True).plan.actions
    [action] = [a for a in actions if a.name == "wallbox.example.com"]
    assert action.kind == "error" and "no Cloudflare token can use zone id" in action.reason
    assert "environment variable CF_HOSTS" in action.reason and "host-edit" not in action.reason


# -- doctor ---------------------------------------------------------------------------------------
def test_doctor_checks_where_each_challenge_leads(cf_world: SandboxWorld, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cf_world.store.add_zone("example.org")
    cf_world.emulator.add_record("example.org", "CNAME", "_acme-challenge.home.example.org",
                                 "_acme-challenge.acme.example.net")
    monkeypatch.setenv("CF_ALL", cf_world.token)
    certificates = """
[[certificates]]
name = "home"
domains = ["home.example.org", "nas.example.org", "www.example.com"]
[certificates.names."nas.example.org"]
challenge_alias = "acme.example.net"
"""
    cfg = config(cf_world, tmp_path, 'api_token_env = "CF_ALL"', certificates)
    checks = dns_checks.challenge_checks(cfg, "home.example.org", open_dns(cfg))
    assert [c.status for c in checks] == [PASS, FAIL, PASS]
    assert checks[0].message.startswith(
        "_acme-challenge.home.example.org -> _acme-challenge.acme.example.net: certd writes the TXT at "
        "_acme-challenge.acme.example.net in zone example.net")
    assert "`_acme-challenge.nas.example.org. CNAME _acme-challenge.acme.example.net.`" in checks[1].message
    assert "README" in (checks[1].fix or "")
    assert "(no CNAME)" in checks[2].message and "zone example.com" in checks[2].message

    without_api = dns_checks.challenge_checks(cfg, "www.example.com", None)
    assert [c.status for c in without_api] == [WARN, FAIL, WARN]
    assert dns_checks.challenge_checks(cfg, "other.example.net", None) == []
