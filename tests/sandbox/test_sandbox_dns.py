"""The sandbox authoritative DNS server, asked over UDP and TCP with dnspython."""

from __future__ import annotations

import time

import cloudflare
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from certd.sandbox import EDGE_IPV4, EDGE_IPV6, SandboxWorld


def ask(world: SandboxWorld, name: str, rdtype: str, *, tcp: bool = False, edns: bool = True) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    query.flags &= ~dns.flags.RD
    if tcp:
        return dns.query.tcp(query, "127.0.0.1", port=world.dns_port, timeout=2)
    return dns.query.udp(query, "127.0.0.1", port=world.dns_port, timeout=2)


def txt_values(answer: dns.resolver.Answer) -> set[str]:
    return {b"".join(r.strings).decode() for r in answer}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_several_txt_values_on_one_name(cf_world: SandboxWorld, cf: cloudflare.Cloudflare,
                                        resolver: dns.resolver.Resolver, tcp: bool) -> None:
    zone_id = cf_world.zone_ids["example.com"]
    # Apex and wildcard DNS-01 share _acme-challenge.example.com.
    cf.dns.records.create(zone_id=zone_id, type="TXT", name="_acme-challenge", content="for-apex", ttl=60)
    cf.dns.records.create(zone_id=zone_id, type="TXT", name="_acme-challenge", content="for-wildcard", ttl=60)
    answer = resolver.resolve("_acme-challenge.example.com", "TXT", tcp=tcp)
    assert txt_values(answer) == {"for-apex", "for-wildcard"}
    assert answer.rrset is not None and answer.rrset.ttl == 60
    assert answer.response.flags & dns.flags.AA


def test_nxdomain_carries_the_soa(cf_world: SandboxWorld, resolver: dns.resolver.Resolver) -> None:
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("missing.example.com", "TXT")
    response = ask(cf_world, "missing.example.com", "TXT")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    [soa] = response.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == "example.com."


def test_nodata_for_an_existing_name(cf_world: SandboxWorld, resolver: dns.resolver.Resolver) -> None:
    cf_world.emulator.add_record("example.com", "A", "host.example.com", "192.168.1.5")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("host.example.com", "TXT")
    response = ask(cf_world, "host.example.com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    assert response.authority[0].rdtype == dns.rdatatype.SOA
    # A parent of a record exists too (empty non-terminal): NODATA, not NXDOMAIN.
    cf_world.emulator.add_record("example.com", "TXT", "_acme-challenge.deep.example.com", "v")
    assert ask(cf_world, "deep.example.com", "A").rcode() == dns.rcode.NOERROR


def test_refused_outside_every_zone(cf_world: SandboxWorld) -> None:
    response = ask(cf_world, "example.org", "A")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    assert ask(cf_world, "notexample.com", "A").rcode() == dns.rcode.REFUSED


def test_apex_soa_ns_and_nameserver_addresses(cf_world: SandboxWorld, resolver: dns.resolver.Resolver) -> None:
    soa = resolver.resolve("example.net", "SOA")
    assert soa[0].mname.to_text() == "ns1.example.net."
    ns = resolver.resolve("example.net", "NS")
    assert sorted(r.target.to_text() for r in ns) == ["ns1.example.net.", "ns2.example.net."]
    assert [r.address for r in resolver.resolve("ns2.example.net", "A")] == ["127.0.0.1"]
    assert ns.response.additional, "glue for in-zone nameservers"


def test_a_aaaa_ttl_auto_and_cname_chase(cf_world: SandboxWorld, resolver: dns.resolver.Resolver) -> None:
    em = cf_world.emulator
    em.add_record("example.com", "A", "nas.example.com", "192.168.1.40")  # ttl 1 = automatic
    em.add_record("example.com", "AAAA", "nas.example.com", "fd00::40", ttl=120)
    em.add_record("example.com", "CNAME", "files.example.com", "nas.example.com")
    a = resolver.resolve("nas.example.com", "A")
    assert [r.address for r in a] == ["192.168.1.40"] and a.rrset is not None and a.rrset.ttl == 300
    aaaa = resolver.resolve("nas.example.com", "AAAA")
    assert [r.address for r in aaaa] == ["fd00::40"] and aaaa.rrset is not None and aaaa.rrset.ttl == 120
    chased = resolver.resolve("files.example.com", "A")
    assert [r.address for r in chased] == ["192.168.1.40"]
    assert chased.canonical_name.to_text() == "nas.example.com."


def test_wildcard_records_answer_for_missing_names(cf_world: SandboxWorld, resolver: dns.resolver.Resolver) -> None:
    cf_world.emulator.add_record("example.com", "A", "*.lan.example.com", "192.168.1.50")
    cf_world.emulator.add_record("example.com", "A", "real.lan.example.com", "192.168.1.51")
    assert [r.address for r in resolver.resolve("anything.lan.example.com", "A")] == ["192.168.1.50"]
    assert [r.address for r in resolver.resolve("real.lan.example.com", "A")] == ["192.168.1.51"]
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("real.lan.example.com", "TXT")  # an existing name never takes the wildcard


def test_proxied_records_answer_edge_addresses_not_the_lan(cf_world: SandboxWorld, cf: cloudflare.Cloudflare,
                                                           resolver: dns.resolver.Resolver) -> None:
    zone_id = cf_world.zone_ids["example.com"]
    record = cf.dns.records.create(zone_id=zone_id, type="A", name="home", content="192.168.1.10", proxied=True)
    assert record is not None
    a = {r.address for r in resolver.resolve("home.example.com", "A")}
    assert a == set(EDGE_IPV4) and "192.168.1.10" not in a
    assert {r.address for r in resolver.resolve("home.example.com", "AAAA")} == set(EDGE_IPV6)
    # Gray cloud: now the LAN address shows.
    cf.dns.records.edit(dns_record_id=record.id, zone_id=zone_id, type="A", name="home", content="192.168.1.10",
                        proxied=False)
    assert [r.address for r in resolver.resolve("home.example.com", "A")] == ["192.168.1.10"]


def test_proxied_cname_hides_its_target(cf_world: SandboxWorld, resolver: dns.resolver.Resolver) -> None:
    cf_world.emulator.add_record("example.com", "CNAME", "www.example.com", "origin.example.net", proxied=True)
    answer = resolver.resolve("www.example.com", "A")
    assert {r.address for r in answer} == set(EDGE_IPV4)
    assert answer.canonical_name.to_text() == "www.example.com."


def test_propagation_delay(cf_world: SandboxWorld, cf: cloudflare.Cloudflare, resolver: dns.resolver.Resolver) -> None:
    cf_world.emulator.propagation_delay = 0.4
    zone_id = cf_world.zone_ids["example.com"]
    created_at = time.monotonic()
    record = cf.dns.records.create(zone_id=zone_id, type="TXT", name="_acme-challenge", content="late", ttl=60)
    assert record is not None
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("_acme-challenge.example.com", "TXT")
    # The API already shows it.
    assert [r["content"] for r in cf_world.emulator.records("example.com")] == ["late"]
    visible_after = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if txt_values(resolver.resolve("_acme-challenge.example.com", "TXT")) == {"late"}:
                visible_after = time.monotonic() - created_at
                break
        except dns.resolver.NXDOMAIN:
            time.sleep(0.02)
    assert visible_after is not None, "the record never became visible"
    assert visible_after >= 0.39

    # A delete also takes the delay to show.
    cf.dns.records.delete(dns_record_id=record.id, zone_id=zone_id)
    assert txt_values(resolver.resolve("_acme-challenge.example.com", "TXT")) == {"late"}


def test_large_txt_answers_truncate_over_udp_and_work_over_tcp(cf_world: SandboxWorld,
                                                               resolver: dns.resolver.Resolver) -> None:
    values = {f"{i:02d}-" + "x" * 200 for i in range(20)}
    for value in values:
        cf_world.emulator.add_record("example.com", "TXT", "_acme-challenge.big.example.com", value)
    udp = ask(cf_world, "_acme-challenge.big.example.com", "TXT", edns=False)
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = ask(cf_world, "_acme-challenge.big.example.com", "TXT", tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert {b"".join(r.strings).decode() for r in tcp.answer[0]} == values
    # A resolver falls back to TCP by itself.
    assert txt_values(resolver.resolve("_acme-challenge.big.example.com", "TXT")) == values
    assert ("tcp", "_acme-challenge.big.example.com.", "TXT") in cf_world.dns.queries


def test_long_txt_content_is_split_into_255_byte_strings(cf_world: SandboxWorld,
                                                         resolver: dns.resolver.Resolver) -> None:
    content = "k=" + "a" * 600
    cf_world.emulator.add_record("example.com", "TXT", "dkim.example.com", content)
    [rdata] = resolver.resolve("dkim.example.com", "TXT")
    assert [len(s) for s in rdata.strings] == [255, 255, 92]
    assert b"".join(rdata.strings).decode() == content


def test_answers_keep_the_askers_case(cf_world: SandboxWorld) -> None:
    """Validators may randomise the case of names (0x20); the owner name must echo it."""
    cf_world.emulator.add_record("example.com", "TXT", "_acme-challenge.example.com", "v")
    response = ask(cf_world, "_ACME-Challenge.ExAmple.COM", "TXT")
    [rrset] = response.answer
    assert rrset.name.to_text(omit_final_dot=True) == "_ACME-Challenge.ExAmple.COM"
    assert response.flags & dns.flags.AA and response.rcode() == dns.rcode.NOERROR
