"""Propagation checks on hosts that cannot reach every nameserver address (IPv4-only Docker).

The network is real (the sandbox's authoritative DNS server over UDP); only the
kernel's answer for the unroutable address is given, because whether 2001:db8::53
is routable depends on the host running the tests. ENETUNREACH is what an
IPv4-only host raises for it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest

from certd.dns.cloudflare import CloudflareDNS
from certd.dns.propagation import Nameserver, Server, txt_values, wait_for_txt
from certd.errors import PropagationTimeout
from certd.sandbox import SandboxDNSServer, SandboxWorld
from certd.sandbox.zones import ZoneStore

FQDN = "_acme-challenge.example.com"
UNROUTABLE: Server = ("2001:db8::53", 53)


class FakeClock:
    """Monotonic time that only moves when the code under test sleeps (no timed tests)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def host_without_ipv6_route(address: Server, fqdn: str) -> set[str]:
    """The real query, except that `UNROUTABLE` fails as on a host without an IPv6 route."""
    if address == UNROUTABLE:
        raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
    return txt_values(address, fqdn)


def sandbox_server(world: SandboxWorld) -> Server:
    host, port = world.dns_addr.rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def published(cf_world: SandboxWorld) -> SandboxWorld:
    dns = CloudflareDNS(cf_world.token, base_url=cf_world.base_url)
    dns.create_record(dns.find_zone("example.com"), type="TXT", name=FQDN, content="token-value", ttl=60)
    return cf_world


@pytest.fixture
def stale_server() -> Iterator[Server]:
    """A reachable authoritative server for example.com that does not have the record (yet)."""
    store = ZoneStore()
    store.add_zone("example.com")
    with SandboxDNSServer(store) as server:
        host, port = server.address.rsplit(":", 1)
        yield host, int(port)


def test_unreachable_address_is_skipped_when_another_address_of_that_nameserver_answers(
        published: SandboxWorld) -> None:
    ns1 = Nameserver("ns1.example.com", (sandbox_server(published), UNROUTABLE))
    clock = FakeClock()
    waited = wait_for_txt({FQDN: {"token-value"}}, [ns1], 30, clock=clock, sleep=clock.sleep,
                          query=host_without_ipv6_route)
    assert waited == 0.0


def test_nameserver_with_no_reachable_address_still_fails_and_says_why(published: SandboxWorld) -> None:
    ns1 = Nameserver("ns1.example.com", (sandbox_server(published),))
    ns2 = Nameserver("ns2.example.com", (UNROUTABLE,))
    clock = FakeClock()
    with pytest.raises(PropagationTimeout) as info:
        wait_for_txt({FQDN: {"token-value"}}, [ns1, ns2], 30, clock=clock, sleep=clock.sleep,
                     query=host_without_ipv6_route)
    message = str(info.value)
    assert "ns2.example.com (no address reachable from this host: [2001:db8::53]:53:" in message
    assert "unreachable" in message.lower()
    assert "127.0.0.1" not in message  # ns1 answered


def test_reachable_address_without_the_record_is_still_waited_for(
        published: SandboxWorld, stale_server: Server) -> None:
    ns1 = Nameserver("ns1.example.com", (sandbox_server(published), stale_server, UNROUTABLE))
    clock = FakeClock()
    with pytest.raises(PropagationTimeout) as info:
        wait_for_txt({FQDN: {"token-value"}}, [ns1], 30, clock=clock, sleep=clock.sleep,
                     query=host_without_ipv6_route)
    assert f"{FQDN} at {stale_server[0]}:{stale_server[1]}" in str(info.value)
    assert "2001:db8::53" not in str(info.value).split(" (last error")[0]


def test_a_configured_server_alone_is_its_own_nameserver_and_must_answer(published: SandboxWorld) -> None:
    clock = FakeClock()
    with pytest.raises(PropagationTimeout):
        wait_for_txt({FQDN: {"token-value"}}, [sandbox_server(published), UNROUTABLE], 30,
                     clock=clock, sleep=clock.sleep, query=host_without_ipv6_route)
    assert wait_for_txt({FQDN: {"token-value"}}, [sandbox_server(published)], 30,
                        clock=clock, sleep=clock.sleep) == 0.0
