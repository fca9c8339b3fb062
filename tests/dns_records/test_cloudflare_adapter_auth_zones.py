"""The Cloudflare adapter: only the configured token authenticates, only active zones are used."""

from __future__ import annotations

import pytest

from certd.dns.cloudflare import CloudflareDNS
from certd.errors import DNSProviderError
from certd.sandbox import SandboxWorld

SDK_AUTH_ENV = {
    "CLOUDFLARE_EMAIL": "admin@example.com",
    "CLOUDFLARE_API_KEY": "0123456789abcdef0123456789abcdef01234",
    "CLOUDFLARE_API_USER_SERVICE_KEY": "v1.0-user-service-key",
}


@pytest.mark.parametrize("variables", [
    ["CLOUDFLARE_EMAIL", "CLOUDFLARE_API_KEY"],  # a leftover global key: would outrank the token
    ["CLOUDFLARE_EMAIL"],  # alone: every call failed with a misleading permission error
    ["CLOUDFLARE_API_USER_SERVICE_KEY"],
])
def test_sdk_auth_variables_in_the_environment_are_ignored(
        cf_world: SandboxWorld, monkeypatch: pytest.MonkeyPatch, variables: list[str]) -> None:
    for name in variables:
        monkeypatch.setenv(name, SDK_AUTH_ENV[name])
    cf_world.emulator.clear_requests()
    dns = CloudflareDNS(cf_world.token, zone_token=cf_world.token, base_url=cf_world.base_url)
    zone = dns.find_zone("wallbox.example.com")
    record = dns.create_record(zone, type="TXT", name="_acme-challenge.wallbox.example.com", content="v")
    assert dns.delete_record(zone, record.id)
    seen = cf_world.emulator.requests
    assert len(seen) >= 3  # list zones, create (writer client), delete
    assert {r.auth_headers for r in seen} == {("Authorization",)}
    assert {r.status for r in seen} <= {200}


def test_pending_zone_does_not_win_over_the_active_parent(cf_world: SandboxWorld) -> None:
    cf_world.emulator.add_zone("lan.example.com", status="pending")
    dns = CloudflareDNS(cf_world.token, base_url=cf_world.base_url)
    assert dns.find_zone("nas.lan.example.com").name == "example.com"
    assert "lan.example.com" not in [z.name for z in dns.zones()]


def test_no_active_zone_names_the_skipped_ones(cf_world: SandboxWorld) -> None:
    cf_world.emulator.add_zone("example.org", status="moved")
    cf_world.emulator.add_zone("lab.example.org", status="pending")
    cf_world.emulator.add_zone("unrelated.org", status="pending")
    dns = CloudflareDNS(cf_world.token, base_url=cf_world.base_url)
    with pytest.raises(DNSProviderError) as info:
        dns.find_zone("nas.lab.example.org")
    message = str(info.value)
    assert "example.org (moved)" in message and "lab.example.org (pending)" in message
    assert "unrelated.org" not in message
    assert cf_world.token not in message

