"""CNAMEs on the sandbox's authoritative server, and certd following them (certd.dns.cnames)."""

from __future__ import annotations

import dns.message
import dns.query
import dns.rdatatype

from certd.dns.cnames import observe_chain, zone_apex
from certd.dns.delegation import CnameChain
from certd.sandbox import SandboxWorld

START = "_acme-challenge.home.example.org"
TARGET = "_acme-challenge.home.example.net"


def ask(world: SandboxWorld, name: str, rdtype: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=world.dns_port, timeout=2)


def test_a_cname_is_answered_with_its_target_records_across_zones(cf_world: SandboxWorld) -> None:
    cf_world.store.add_zone("example.org")
    cf_world.emulator.add_record("example.org", "CNAME", START, TARGET)
    cf_world.emulator.add_record("example.net", "TXT", TARGET, "token-value")
    answer = ask(cf_world, START, "TXT")
    assert [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)) for r in answer.answer] == [
        (START + ".", "CNAME"), (TARGET + ".", "TXT")]
    only_cname = ask(cf_world, START, "CNAME")
    assert [r.to_text() for r in only_cname.answer] == [f"{START}. 300 IN CNAME {TARGET}."]


def test_a_loop_is_answered_once_around(cf_world: SandboxWorld) -> None:
    cf_world.emulator.add_record("example.com", "CNAME", "a.example.com", "b.example.net")
    cf_world.emulator.add_record("example.net", "CNAME", "b.example.net", "a.example.com")
    wire = ask(cf_world, "a.example.com", "TXT")
    owners = [r.name.to_text() for r in wire.answer]
    assert owners == ["a.example.com.", "b.example.net."]


def test_following_a_chain(cf_world: SandboxWorld) -> None:
    override = [cf_world.dns_addr]
    cf_world.store.add_zone("example.org")
    assert observe_chain(START, override) == CnameChain(START, (), "end", apex="example.org")

    cf_world.emulator.add_record("example.org", "CNAME", START, "relay.example.com")
    cf_world.emulator.add_record("example.com", "CNAME", "relay.example.com", TARGET)
    assert observe_chain(START, override) == CnameChain(START, ("relay.example.com", TARGET), "end",
                                                        apex="example.net")
    too_long = observe_chain(START, override, max_hops=1)
    assert (too_long.outcome, too_long.targets) == ("too_long", ("relay.example.com",))


def test_a_loop_and_a_target_outside_every_zone(cf_world: SandboxWorld) -> None:
    override = [cf_world.dns_addr]
    cf_world.emulator.add_record("example.com", "CNAME", "_acme-challenge.a.example.com", "x.example.net")
    cf_world.emulator.add_record("example.net", "CNAME", "x.example.net", "_acme-challenge.a.example.com")
    looped = observe_chain("_acme-challenge.a.example.com", override)
    assert looped.outcome == "loop"
    assert looped.describe() == "_acme-challenge.a.example.com -> x.example.net -> _acme-challenge.a.example.com"

    cf_world.emulator.add_record("example.com", "CNAME", "_acme-challenge.b.example.com", "acme.nowhere.test")
    lost = observe_chain("_acme-challenge.b.example.com", override)
    assert (lost.outcome, lost.targets) == ("failed", ("acme.nowhere.test",))
    assert "REFUSED" in (lost.error or "")


def test_zone_apex_comes_from_the_soa(cf_world: SandboxWorld) -> None:
    cf_world.store.add_zone("lab.example.com")
    assert zone_apex("nas.lab.example.com", [cf_world.dns_addr]) == "lab.example.com"
    assert zone_apex("nas.example.com", [cf_world.dns_addr]) == "example.com"
    assert zone_apex("nas.nowhere.test", [cf_world.dns_addr]) is None


def test_a_wildcard_cname_is_no_delegation(cf_world: SandboxWorld) -> None:
    """`*.example.com CNAME example.com` answers for `_acme-challenge.example.com` too; a TXT written
    at the challenge name overrides it, so certd writes there (as it did before following CNAMEs)."""
    cf_world.emulator.add_record("example.com", "CNAME", "*.example.com", "example.com")
    assert ask(cf_world, "_acme-challenge.example.com", "CNAME").answer  # the wildcard answers
    chain = observe_chain("_acme-challenge.example.com", [cf_world.dns_addr])
    assert (chain.outcome, chain.targets) == ("end", ())
    # A real CNAME under the same wildcard is still followed.
    cf_world.emulator.add_record("example.com", "CNAME", "_acme-challenge.www.example.com", TARGET)
    assert observe_chain("_acme-challenge.www.example.com", [cf_world.dns_addr]).targets == (TARGET,)
