"""The official Cloudflare SDK against the emulator: every call certd makes, round trip."""

from __future__ import annotations

import re
from typing import Any

import cloudflare
import httpx
import pytest

from certd.sandbox import SandboxWorld

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def error_codes(exc: cloudflare.APIStatusError) -> list[int]:
    """Top-level and chained error codes of an SDK error."""
    assert isinstance(exc.body, dict)
    codes = []
    for error in exc.body["errors"]:
        codes.append(error["code"])
        codes += [e["code"] for e in error.get("error_chain", [])]
    return codes


def raw_get(world: SandboxWorld, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(world.base_url + path, params=params,
                         headers={"Authorization": f"Bearer {world.token}"})
    body: dict[str, Any] = response.json()
    return body


# -- zones ----------------------------------------------------------------------

def test_zones_list_filters_by_name_and_status(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    cf_world.emulator.add_zone("pending.example", status="pending")
    assert [z.name for z in cf.zones.list(name="example.com")] == ["example.com"]
    assert [z.name for z in cf.zones.list(name="EXAMPLE.NET", status="active")] == ["example.net"]
    assert [z.name for z in cf.zones.list(status="pending")] == ["pending.example"]
    assert [z.name for z in cf.zones.list(name="nothere.example")] == []
    assert sorted(z.name for z in cf.zones.list(name="ends_with:.com")) == ["example.com"]
    zone = next(iter(cf.zones.list(name="example.com")))
    assert zone.id == cf_world.zone_ids["example.com"]
    assert zone.status == "active"
    assert zone.name_servers == ["ns1.example.com", "ns2.example.com"]


def test_zones_get(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    zone = cf.zones.get(zone_id=cf_world.zone_ids["example.net"])
    assert zone is not None
    assert (zone.id, zone.name, zone.status) == (cf_world.zone_ids["example.net"], "example.net", "active")
    assert zone.created_on is not None and zone.account.name


def test_zones_auto_pagination_over_many_pages(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    for i in range(60):
        cf_world.emulator.add_zone(f"zone{i:02d}.test")
    cf_world.emulator.clear_requests()
    names = [z.name for z in cf.zones.list(per_page=50)]
    assert len(names) == 62 and len(set(names)) == 62
    pages = [r.query for r in cf_world.emulator.requests]
    # Two full pages, then the SDK asks for a third and stops at its emptiness.
    assert len(pages) == 3
    body = raw_get(cf_world, "/zones", per_page=50, page=2)
    assert body["result_info"] == {"page": 2, "per_page": 50, "count": 12, "total_count": 62, "total_pages": 2}


def test_zones_per_page_is_clamped_like_the_api(cf_world: SandboxWorld) -> None:
    assert raw_get(cf_world, "/zones", per_page=500)["result_info"]["per_page"] == 50
    assert raw_get(cf_world, "/zones")["result_info"]["per_page"] == 20


# -- records --------------------------------------------------------------------

def test_record_create_get_edit_update_delete(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    zone_id = cf_world.zone_ids["example.com"]
    created = cf.dns.records.create(zone_id=zone_id, type="A", name="Home.Example.com", content="192.168.1.10",
                                    ttl=1, proxied=False, comment="certd: gray cloud")
    assert created is not None
    assert HEX32.match(created.id)
    assert (created.name, created.type, created.content, created.ttl, created.proxied) == (
        "home.example.com", "A", "192.168.1.10", 1, False)
    assert created.comment == "certd: gray cloud"
    assert created.proxiable is True
    assert created.created_on is not None and created.modified_on is not None

    fetched = cf.dns.records.get(dns_record_id=created.id, zone_id=zone_id)
    assert fetched is not None and fetched.id == created.id and fetched.content == "192.168.1.10"

    edited = cf.dns.records.edit(dns_record_id=created.id, zone_id=zone_id, type="A", name="home.example.com",
                                 content="192.168.1.11")
    assert edited is not None
    assert (edited.content, edited.comment, edited.ttl) == ("192.168.1.11", "certd: gray cloud", 1)

    replaced = cf.dns.records.update(dns_record_id=created.id, zone_id=zone_id, type="A", name="home",
                                     content="192.168.1.12", ttl=300)
    assert replaced is not None
    # PUT overwrites: the comment not sent is gone.
    assert (replaced.name, replaced.content, replaced.ttl, replaced.comment) == (
        "home.example.com", "192.168.1.12", 300, None)

    deleted = cf.dns.records.delete(dns_record_id=created.id, zone_id=zone_id)
    assert deleted is not None and deleted.id == created.id
    assert cf_world.emulator.records("example.com") == []
    with pytest.raises(cloudflare.NotFoundError) as info:
        cf.dns.records.get(dns_record_id=created.id, zone_id=zone_id)
    assert error_codes(info.value) == [81044]
    with pytest.raises(cloudflare.NotFoundError):
        cf.dns.records.delete(dns_record_id=created.id, zone_id=zone_id)


def test_record_json_has_cloudflare_fields(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    zone_id = cf_world.zone_ids["example.com"]
    cf.dns.records.create(zone_id=zone_id, type="TXT", name="_acme-challenge", content="token-1", ttl=60)
    record = raw_get(cf_world, f"/zones/{zone_id}/dns_records")["result"][0]
    for key in ("id", "zone_id", "zone_name", "name", "type", "content", "proxiable", "proxied", "ttl",
                "comment", "tags", "created_on", "modified_on", "meta", "settings"):
        assert key in record, key
    assert record["zone_name"] == "example.com" and record["zone_id"] == zone_id
    assert record["proxiable"] is False and record["tags"] == [] and record["comment"] is None
    assert record["created_on"].endswith("Z")


def test_records_list_filters(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    zone_id = cf_world.zone_ids["example.com"]
    em = cf_world.emulator
    em.add_record("example.com", "TXT", "_acme-challenge.example.com", "value-apex", comment="certd")
    em.add_record("example.com", "TXT", "_acme-challenge.example.com", "value-wildcard", comment="certd")
    em.add_record("example.com", "TXT", "_acme-challenge.www.example.com", "value-www")
    em.add_record("example.com", "A", "www.example.com", "192.168.1.20")

    def contents(**params: Any) -> list[str]:
        return sorted(r.content for r in cf.dns.records.list(zone_id=zone_id, **params))

    assert contents(type="TXT", name={"exact": "_acme-challenge.example.com"}) == ["value-apex", "value-wildcard"]
    assert contents(type="TXT", name={"exact": "_ACME-challenge.EXAMPLE.com"}) == ["value-apex", "value-wildcard"]
    assert contents(name="_acme-challenge.www.example.com") == ["value-www"]  # plain name= is exact too
    assert contents(type="TXT", content={"exact": "value-wildcard"}) == ["value-wildcard"]
    assert contents(comment={"exact": "certd"}) == ["value-apex", "value-wildcard"]
    assert contents(comment="certd") == ["value-apex", "value-wildcard"]
    assert contents(type="A") == ["192.168.1.20"]
    assert contents(name={"startswith": "_acme-challenge."}) == ["value-apex", "value-wildcard", "value-www"]
    assert contents(type="A", content={"exact": "value-www"}, match="any") == ["192.168.1.20", "value-www"]
    assert contents(type="MX") == []


def test_records_pagination_over_more_than_50(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    zone_id = cf_world.zone_ids["example.com"]
    for i in range(120):
        cf_world.emulator.add_record("example.com", "TXT", f"r{i:03d}.example.com", f"v{i}")
    cf_world.emulator.clear_requests()
    names = [r.name for r in cf.dns.records.list(zone_id=zone_id, per_page=50)]
    assert len(names) == 120 and len(set(names)) == 120
    assert len(cf_world.emulator.requests) == 4  # 50 + 50 + 20, then an empty page ends the iteration
    first = cf.dns.records.list(zone_id=zone_id, per_page=50, page=3)
    assert len(first.result) == 20
    body = raw_get(cf_world, f"/zones/{zone_id}/dns_records", per_page=50, page=3)
    assert body["result_info"] == {"page": 3, "per_page": 50, "count": 20, "total_count": 120, "total_pages": 3}
    assert raw_get(cf_world, f"/zones/{zone_id}/dns_records")["result_info"]["per_page"] == 100


def test_short_and_apex_names_are_qualified(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    zone_id = cf_world.zone_ids["example.net"]
    a = cf.dns.records.create(zone_id=zone_id, type="A", name="@", content="192.0.2.1")
    b = cf.dns.records.create(zone_id=zone_id, type="TXT", name="_acme-challenge.host", content="x")
    c = cf.dns.records.create(zone_id=zone_id, type="CNAME", name="alias.example.net.", content="Host.Example.NET")
    assert a is not None and b is not None and c is not None
    assert (a.name, b.name, c.name, c.content) == (
        "example.net", "_acme-challenge.host.example.net", "alias.example.net", "host.example.net")


def test_token_verify(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    result = cf.user.tokens.verify()
    assert result is not None
    assert result.status == "active" and HEX32.match(result.id)
    assert result.id != cf_world.token


# -- validation like the real API ------------------------------------------------

@pytest.mark.parametrize(("fields", "code"), [
    ({"type": "TXT", "name": "t", "content": "x", "proxied": True}, 9004),
    ({"type": "A", "name": "a", "content": "not-an-ip"}, 9005),
    ({"type": "A", "name": "a", "content": "2001:db8::1"}, 9005),
    ({"type": "AAAA", "name": "a", "content": "192.0.2.1"}, 9006),
    ({"type": "A", "name": "a", "content": "192.0.2.1", "ttl": 30}, 9021),
    ({"type": "A", "name": "a", "content": "192.0.2.1", "ttl": 100000}, 9021),
    ({"type": "A", "name": "bad name!", "content": "192.0.2.1"}, 9000),
])
def test_invalid_records_are_refused(cf_world: SandboxWorld, cf: cloudflare.Cloudflare,
                                     fields: dict[str, Any], code: int) -> None:
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.dns.records.create(zone_id=cf_world.zone_ids["example.com"], **fields)
    assert code in error_codes(info.value)
    assert cf_world.emulator.records() == []


def test_ttl_errors_come_wrapped_in_dns_validation_error(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.dns.records.create(zone_id=cf_world.zone_ids["example.com"], type="TXT", name="t", content="x", ttl=5)
    assert isinstance(info.value.body, dict)
    error = info.value.body["errors"][0]
    assert error["code"] == 1004 and error["error_chain"][0]["code"] == 9021


def test_identical_record_is_refused(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    zone_id = cf_world.zone_ids["example.com"]
    cf.dns.records.create(zone_id=zone_id, type="TXT", name="_acme-challenge", content="same", ttl=60)
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.dns.records.create(zone_id=zone_id, type="TXT", name="_acme-challenge.example.com", content="same")
    assert error_codes(info.value) == [81058]
    assert isinstance(info.value.body, dict)
    assert info.value.body["errors"][0]["message"] == "An identical record already exists."
    # A second, different value on the same name is fine (wildcard + apex DNS-01).
    cf.dns.records.create(zone_id=zone_id, type="TXT", name="_acme-challenge", content="other", ttl=60)
    assert len(cf_world.emulator.records("example.com")) == 2


def test_cname_conflicts(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    zone_id = cf_world.zone_ids["example.com"]
    cf.dns.records.create(zone_id=zone_id, type="A", name="host", content="192.0.2.5")
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.dns.records.create(zone_id=zone_id, type="CNAME", name="host", content="elsewhere.example.net")
    assert error_codes(info.value) == [81053]
    cf.dns.records.create(zone_id=zone_id, type="CNAME", name="alias", content="host.example.com")
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.dns.records.create(zone_id=zone_id, type="A", name="alias", content="192.0.2.6")
    assert error_codes(info.value) == [81054]


def test_edit_into_a_duplicate_is_refused(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    zone_id = cf_world.zone_ids["example.com"]
    cf.dns.records.create(zone_id=zone_id, type="TXT", name="t", content="one")
    second = cf.dns.records.create(zone_id=zone_id, type="TXT", name="t", content="two")
    assert second is not None
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.dns.records.edit(dns_record_id=second.id, zone_id=zone_id, type="TXT", name="t", content="one")
    assert error_codes(info.value) == [81058]
    # Editing a record to its own current values is not a duplicate of itself.
    same = cf.dns.records.edit(dns_record_id=second.id, zone_id=zone_id, type="TXT", name="t", content="two")
    assert same is not None and same.content == "two"


def test_malformed_identifiers_get_7003(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.dns.records.list(zone_id="example.com")
    assert error_codes(info.value) == [7003, 7000]
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.dns.records.get(dns_record_id="42", zone_id=cf_world.zone_ids["example.com"])
    assert error_codes(info.value) == [7003, 7000]
