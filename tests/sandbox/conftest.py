"""Fixtures for the sandbox's own tests: an SDK client and a resolver aimed at the sandbox."""

from __future__ import annotations

import cloudflare
import dns.resolver
import pytest

from certd.sandbox import SandboxWorld


@pytest.fixture
def cf(cf_world: SandboxWorld) -> cloudflare.Cloudflare:
    """The official SDK with its default retries (2), talking to the emulator with the full-access token."""
    return cloudflare.Cloudflare(api_token=cf_world.token, base_url=cf_world.base_url)


@pytest.fixture
def resolver(cf_world: SandboxWorld) -> dns.resolver.Resolver:
    """A dnspython stub resolver that asks only the sandbox DNS server, without caching."""
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = cf_world.dns_port
    res.lifetime = 3.0
    res.timeout = 1.0
    return res
