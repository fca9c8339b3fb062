"""Address sources: fixed, an interface's address, and `auto` (default route)."""

from __future__ import annotations

import ipaddress

from certd.config import parse_config
from certd.dns.addresses import (
    AddressWatch, InterfaceSnapshot, _default_route_v4, _default_route_v6, _unfit_ipv6_from_proc,
    read_interfaces, resolve_host, resolve_hosts,
)

ip = ipaddress.ip_address


def hosts(text: str):  # type: ignore[no-untyped-def]
    return list(parse_config(text).hosts)


LAN = InterfaceSnapshot(
    addresses={
        "lo": (ip("127.0.0.1"), ip("::1")),
        "eth0": (ip("169.254.3.3"), ip("192.168.1.100"), ip("fe80::1"), ip("2001:db8:1::5"),
                 ip("fd00::100"), ip("fd00::beef")),
        "wlan0": (ip("10.0.0.7"),),
        "eth1": (),
    },
    up=frozenset({"lo", "eth0", "wlan0"}),
    unfit_ipv6=frozenset({ip("fd00::100")}),
    default_v4="eth0",
)


def test_fixed_addresses_need_no_interfaces():
    [h] = hosts('[[hosts]]\nname = "a.example.com"\naddress = ["192.168.1.9", "fd00::9"]\n')
    got = resolve_host(h, InterfaceSnapshot())
    assert got.contents == {"A": "192.168.1.9", "AAAA": "fd00::9"} and not got.errors


def test_interface_and_auto_pick_stable_lan_addresses():
    named, auto = hosts('[[hosts]]\nname = "a.example.com"\ninterface = "wlan0"\n'
                        '[[hosts]]\nname = "b.example.com"\ninterface = "auto"\naaaa = true\n')
    assert resolve_host(named, LAN).contents == {"A": "10.0.0.7"}
    got = resolve_host(auto, LAN)
    # Link-local skipped; the temporary fd00::100 skipped; ULA preferred over the global address.
    assert got.contents == {"A": "192.168.1.100", "AAAA": "fd00::beef"} and not got.errors


def test_unusable_interfaces_give_reasons_not_addresses():
    missing, down, no_v6 = hosts(
        '[[hosts]]\nname = "a.example.com"\ninterface = "eth7"\n'
        '[[hosts]]\nname = "b.example.com"\ninterface = "eth1"\n'
        '[[hosts]]\nname = "c.example.com"\ninterface = "wlan0"\naaaa = true\n')
    assert "eth7 does not exist" in resolve_host(missing, LAN).errors["A"]
    assert "eth1 is down" in resolve_host(down, LAN).errors["A"]
    got = resolve_host(no_v6, LAN)
    assert got.contents == {"A": "10.0.0.7"} and "no stable IPv6" in got.errors["AAAA"]


def test_auto_without_default_route():
    [auto] = hosts('[[hosts]]\nname = "a.example.com"\ninterface = "auto"\n')
    no_route = InterfaceSnapshot(addresses=LAN.addresses, up=LAN.up)
    assert "no default route" in resolve_host(auto, no_route).errors["A"]
    not_linux = InterfaceSnapshot(default_route_error="cannot read the routing table")
    assert "routing table" in resolve_host(auto, not_linux).errors["A"]


def test_proc_parsers():
    route = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "wlan0\t00000000\t0100000A\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        "eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
    )
    assert _default_route_v4(route) == "eth0"
    assert _default_route_v4(route.splitlines()[0]) is None
    v6 = (
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fe800000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n"
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
    )
    assert _default_route_v6(v6) == "eth0"
    inet6 = ("fd000000000000000000000000000100 02 40 00 01     eth0\n"
             "fd00000000000000000000000000beef 02 40 00 80     eth0\n")
    assert _unfit_ipv6_from_proc(inet6) == frozenset({ip("fd00::100")})


def test_read_interfaces_on_this_machine():
    snapshot = read_interfaces()
    loopback = next(name for name, addrs in snapshot.addresses.items() if ip("127.0.0.1") in addrs)
    assert loopback in snapshot.up
    # The kernel's own view of the default route must agree with ours when there is one.
    if snapshot.default_v4 is not None:
        assert snapshot.default_v4 in snapshot.addresses
        [auto] = hosts('[[hosts]]\nname = "a.example.com"\ninterface = "auto"\n')
        got = resolve_host(auto, snapshot)
        assert "A" in got.contents or "has no IPv4" in got.errors["A"]


def test_resolve_hosts_reads_the_machine_only_when_needed():
    [fixed] = hosts('[[hosts]]\nname = "a.example.com"\naddress = "192.168.1.9"\n')
    assert resolve_hosts([fixed])[0].contents == {"A": "192.168.1.9"}


def test_address_watch_reports_changes_after_the_baseline():
    [dyn, fixed] = hosts('[[hosts]]\nname = "a.example.com"\ninterface = "eth0"\n'
                         '[[hosts]]\nname = "b.example.com"\naddress = "192.168.1.9"\n')
    watch = AddressWatch([dyn, fixed])
    assert watch.active
    assert watch.poll(LAN) == []  # baseline
    assert watch.poll(LAN) == []
    moved = InterfaceSnapshot(addresses={**LAN.addresses, "eth0": (ip("192.168.1.101"),)}, up=LAN.up)
    assert watch.poll(moved) == ["a.example.com A: 192.168.1.100 -> 192.168.1.101"]
    down = InterfaceSnapshot(addresses=LAN.addresses, up=frozenset())
    assert watch.poll(down) == ["a.example.com A: 192.168.1.101 -> none"]
    assert not AddressWatch([fixed]).active and AddressWatch([fixed]).poll() == []
