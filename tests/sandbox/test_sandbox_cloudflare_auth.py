"""Scoped API tokens and authentication errors, as the SDK sees them."""

from __future__ import annotations

import logging

import cloudflare
import httpx
import pytest

from certd.sandbox import SandboxWorld


def sdk(world: SandboxWorld, token: str) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(api_token=token, base_url=world.base_url, max_retries=0)


def codes(exc: cloudflare.APIStatusError) -> list[int]:
    assert isinstance(exc.body, dict)
    return [e["code"] for e in exc.body["errors"]]


def test_zone_scoped_token_sees_only_its_zone(cf_world: SandboxWorld) -> None:
    cf_world.emulator.add_token("net-only", zones=["example.net"])
    client = sdk(cf_world, "net-only")
    assert [z.name for z in client.zones.list()] == ["example.net"]
    assert [z.name for z in client.zones.list(name="example.com")] == []
    com = cf_world.zone_ids["example.com"]
    with pytest.raises(cloudflare.PermissionDeniedError) as info:
        client.zones.get(zone_id=com)
    assert codes(info.value) == [10000]
    with pytest.raises(cloudflare.PermissionDeniedError) as info:
        client.dns.records.list(zone_id=com)
    assert codes(info.value) == [10000]
    with pytest.raises(cloudflare.PermissionDeniedError):
        client.dns.records.create(zone_id=com, type="TXT", name="_acme-challenge", content="x")
    assert cf_world.emulator.records() == []
    # Its own zone works.
    net = cf_world.zone_ids["example.net"]
    client.dns.records.create(zone_id=net, type="TXT", name="_acme-challenge", content="x")
    assert [r["name"] for r in cf_world.emulator.records("example.net")] == ["_acme-challenge.example.net"]


def test_unknown_zone_id_is_indistinguishable_from_a_foreign_one(cf_world: SandboxWorld,
                                                                 cf: cloudflare.Cloudflare) -> None:
    with pytest.raises(cloudflare.PermissionDeniedError) as info:
        cf.zones.get(zone_id="0123456789abcdef0123456789abcdef")
    assert codes(info.value) == [10000]


def test_token_without_zone_read_cannot_find_zones(cf_world: SandboxWorld) -> None:
    cf_world.emulator.add_token("dns-only", permissions={"dns:edit"})
    client = sdk(cf_world, "dns-only")
    assert list(client.zones.list()) == []
    with pytest.raises(cloudflare.PermissionDeniedError):
        client.zones.get(zone_id=cf_world.zone_ids["example.com"])
    # With the zone id known, DNS:Edit is enough (DNS:Edit implies reading records).
    zone_id = cf_world.zone_ids["example.com"]
    client.dns.records.create(zone_id=zone_id, type="TXT", name="_acme-challenge", content="x")
    assert len(list(client.dns.records.list(zone_id=zone_id))) == 1


def test_read_only_token_cannot_write(cf_world: SandboxWorld) -> None:
    cf_world.emulator.add_token("reader", permissions={"zone:read", "dns:read"})
    cf_world.emulator.add_record("example.com", "TXT", "keep.example.com", "v")
    client = sdk(cf_world, "reader")
    zone_id = cf_world.zone_ids["example.com"]
    [record] = list(client.dns.records.list(zone_id=zone_id))
    with pytest.raises(cloudflare.PermissionDeniedError) as info:
        client.dns.records.create(zone_id=zone_id, type="TXT", name="new", content="x")
    assert codes(info.value) == [10000]
    with pytest.raises(cloudflare.PermissionDeniedError):
        client.dns.records.edit(dns_record_id=record.id, zone_id=zone_id, type="TXT", name="keep", content="y")
    with pytest.raises(cloudflare.PermissionDeniedError):
        client.dns.records.delete(dns_record_id=record.id, zone_id=zone_id)
    assert [r["content"] for r in cf_world.emulator.records()] == ["v"]


def test_zone_read_only_token_cannot_list_records(cf_world: SandboxWorld) -> None:
    cf_world.emulator.add_token("zones", permissions={"zone:read"})
    client = sdk(cf_world, "zones")
    assert len(list(client.zones.list())) == 2
    with pytest.raises(cloudflare.PermissionDeniedError):
        client.dns.records.list(zone_id=cf_world.zone_ids["example.com"])


def test_invalid_and_revoked_tokens_get_401(cf_world: SandboxWorld) -> None:
    with pytest.raises(cloudflare.AuthenticationError) as info:
        sdk(cf_world, "no-such-token").user.tokens.verify()
    assert codes(info.value) == [1000]
    with pytest.raises(cloudflare.AuthenticationError):
        sdk(cf_world, "no-such-token").zones.list()
    cf_world.emulator.add_token("short-lived")
    client = sdk(cf_world, "short-lived")
    assert client.user.tokens.verify() is not None
    cf_world.emulator.remove_token("short-lived")
    with pytest.raises(cloudflare.AuthenticationError):
        client.user.tokens.verify()


def test_missing_or_malformed_authorization_header(cf_world: SandboxWorld) -> None:
    url = cf_world.base_url + "/zones"
    missing = httpx.get(url)
    assert missing.status_code == 400 and missing.json()["errors"][0]["code"] == 9106
    malformed = httpx.get(url, headers={"Authorization": f"Token {cf_world.token}"})
    assert malformed.status_code == 400
    assert malformed.json()["errors"][0]["code"] == 6003
    assert malformed.json()["errors"][0]["error_chain"][0]["code"] == 6111


def test_tokens_never_reach_the_request_log_or_logs(cf_world: SandboxWorld, cf: cloudflare.Cloudflare,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cf.zones.list()
    cf.user.tokens.verify()
    with pytest.raises(cloudflare.AuthenticationError):
        sdk(cf_world, "wrong-secret-token").zones.list()
    log_text = repr(cf_world.emulator.requests) + caplog.text
    assert cf_world.emulator.requests, "the request log should not be empty"
    assert cf_world.token not in log_text
    assert "wrong-secret-token" not in log_text
    token_ids = [r.token_id for r in cf_world.emulator.requests]
    verified = cf.user.tokens.verify()
    assert verified is not None
    assert token_ids == [verified.id, verified.id, None]  # list, verify, then the 401
