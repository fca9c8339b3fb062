"""The DnsProvider contract, run against every implementation certd ships.

Each provider is opened the way certd opens it (certd.dns.registry.open_dns from a
config naming it): the in-memory provider, and the Cloudflare adapter pointed at the
sandbox emulator. A provider passing these is one certd's challenge records and
gray-cloud sync can use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certd.config import parse_config
from certd.dns import memory
from certd.dns.cloudflare import CloudflareDNS
from certd.dns.memory import MemoryDNS
from certd.dns.provider import DnsProvider, Zone
from certd.dns.registry import open_dns
from certd.errors import DNSProviderError
from certd.sandbox.certd_config import toml_str

ZONES = ("example.com", "example.net", "lan.example.com")
CHALLENGE = "_acme-challenge.local.example.com"


@dataclass
class Opened:
    dns: DnsProvider
    kind: type


def _memory(tmp_path: Path, _request: pytest.FixtureRequest) -> Opened:
    config = parse_config(f'state_dir = {toml_str(tmp_path / "state")}\n[dns]\nprovider = "memory"\n')
    for name in ZONES:
        memory.for_config(config).add_zone(name)
    return Opened(open_dns(config), MemoryDNS)


def _cloudflare(tmp_path: Path, request: pytest.FixtureRequest) -> Opened:
    world = request.getfixturevalue("cf_world")  # zones example.com and example.net
    world.emulator.add_zone("lan.example.com")
    request.getfixturevalue("monkeypatch").setenv("CERTD_TEST_CF_TOKEN", world.token)
    config = parse_config(f'state_dir = {toml_str(tmp_path / "state")}\n'
                          f'[cloudflare]\napi_token_env = "CERTD_TEST_CF_TOKEN"\n'
                          f'base_url = {toml_str(world.base_url)}\nmax_retries = 0\n')
    return Opened(open_dns(config), CloudflareDNS)


OPENERS: dict[str, Callable[[Path, pytest.FixtureRequest], Opened]] = {
    "memory": _memory, "cloudflare": _cloudflare,
}


@pytest.fixture(params=sorted(OPENERS))
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DnsProvider]:
    opened = OPENERS[request.param](tmp_path, request)
    assert isinstance(opened.dns, opened.kind)  # the config's provider, not the default
    yield opened.dns


def test_zone_is_the_longest_suffix_on_a_label_boundary(provider: DnsProvider) -> None:
    assert provider.find_zone("nas.lan.example.com").name == "lan.example.com"
    assert provider.find_zone("lan.example.com").name == "lan.example.com"
    assert provider.find_zone("LOCAL.Example.COM.").name == "example.com"
    assert provider.find_zone("*.example.net").name == "example.net"
    assert provider.find_zone("example.com") == provider.find_zone("www.example.com")
    for outside in ("example.org", "notexample.com", "com"):
        with pytest.raises(DNSProviderError):
            provider.find_zone(outside)


def test_create_list_update_delete(provider: DnsProvider) -> None:
    zone = provider.find_zone(CHALLENGE)
    first = provider.create_record(zone, type="TXT", name=CHALLENGE.upper() + ".", content="token-1",
                                   ttl=60, comment="certd ACME challenge (temporary)")
    assert (first.zone_id, first.name, first.type, first.content, first.ttl, first.proxied, first.comment) == (
        zone.id, CHALLENGE, "TXT", "token-1", 60, False, "certd ACME challenge (temporary)")
    second = provider.create_record(zone, type="TXT", name=CHALLENGE, content="token-2", ttl=60)
    assert second.id != first.id  # two values on one name: a wildcard and its base name
    provider.create_record(zone, type="A", name="local.example.com", content="192.168.1.100")

    assert sorted(r.content for r in provider.list_records(zone, name=CHALLENGE)) == ["token-1", "token-2"]
    assert provider.list_records(zone, name=CHALLENGE, type="TXT", content="token-2") == [second]
    assert [r.type for r in provider.list_records(zone, name="local.example.com")] == ["A"]
    assert provider.list_records(zone, name=CHALLENGE, type="A") == []
    assert {r.name for r in provider.list_records(zone)} >= {CHALLENGE, "local.example.com"}

    updated = provider.update_record(zone, second, content="token-3", ttl=120)
    assert (updated.id, updated.content, updated.ttl, updated.name) == (second.id, "token-3", 120, CHALLENGE)
    assert provider.list_records(zone, name=CHALLENGE, content="token-3") == [updated]

    assert provider.delete_record(zone, first.id) is True
    assert provider.delete_record(zone, first.id) is False  # already gone: not an error
    assert [r.id for r in provider.list_records(zone, name=CHALLENGE)] == [second.id]


def test_an_identical_record_is_returned_not_duplicated(provider: DnsProvider) -> None:
    zone = provider.find_zone(CHALLENGE)
    made = provider.create_record(zone, type="TXT", name=CHALLENGE, content="same", ttl=60)
    again = provider.create_record(zone, type="TXT", name=CHALLENGE, content="same", ttl=60)
    assert again.id == made.id
    assert len(provider.list_records(zone, name=CHALLENGE)) == 1


def test_gray_and_orange_cloud_and_comments_round_trip(provider: DnsProvider) -> None:
    zone = provider.find_zone("nas.example.com")
    record = provider.create_record(zone, type="A", name="nas.example.com", content="192.168.1.7",
                                    proxied=False, comment="managed by certd")
    assert (record.proxied, record.ttl) == (False, 1)
    orange = provider.update_record(zone, record, proxied=True)
    assert orange.proxied is True and orange.id == record.id
    gray = provider.update_record(zone, orange, proxied=False, comment="made by hand")
    [listed] = provider.list_records(zone, name="nas.example.com")
    assert listed == gray and (listed.proxied, listed.comment, listed.content) == (
        False, "made by hand", "192.168.1.7")


def test_records_stay_in_their_zone(provider: DnsProvider) -> None:
    parent = provider.find_zone("example.com")
    child = provider.find_zone("nas.lan.example.com")
    made = provider.create_record(child, type="TXT", name="_acme-challenge.nas.lan.example.com", content="v")
    assert made.zone_id == child.id
    assert provider.list_records(parent, name="_acme-challenge.nas.lan.example.com") == []
    assert provider.delete_record(parent, made.id) is False  # not a record of that zone
    assert provider.list_records(child) == [made]
    assert provider.delete_record(child, made.id) is True


def test_a_cname_does_not_share_its_name(provider: DnsProvider) -> None:
    zone: Zone = provider.find_zone("www.example.com")
    provider.create_record(zone, type="A", name="www.example.com", content="192.168.1.9")
    with pytest.raises(DNSProviderError):
        provider.create_record(zone, type="CNAME", name="www.example.com", content="local.example.com")
    assert [r.type for r in provider.list_records(zone, name="www.example.com")] == ["A"]
