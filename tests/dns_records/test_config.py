"""`[[hosts]]` and `[dns_records]`: good configs load, bad ones name the key and the reason."""

from __future__ import annotations

import pytest

from certd.config import parse_config
from certd.errors import ConfigError


def load(text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, "certd.toml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    return str(info.value)


def test_defaults_and_sources():
    config = load("""
[[hosts]]
name = "Local.Example.com."
address = "192.168.1.100"

[[hosts]]
name = "dual.example.com"
address = ["192.168.1.5", "FD00::0064"]
ttl = 120

[[hosts]]
name = "dyn.example.com"
interface = "auto"
aaaa = true
keep = true
""")
    fixed, dual, dyn = config.hosts
    assert fixed.name == "local.example.com" and fixed.record_types == ("A",)
    assert fixed.cloudflare_ttl == 1 and not fixed.proxied and not fixed.adopt and not fixed.keep
    assert dual.fixed_addresses == ["192.168.1.5", "fd00::64"] and dual.record_types == ("A", "AAAA")
    assert dual.cloudflare_ttl == 120
    assert dyn.record_types == ("A", "AAAA") and dyn.keep and dyn.interface == "auto"
    assert config.dns_records.interval == 300 and config.dns_records.marker == "managed by certd"
    assert config.dns_records.keep_removed is False


def test_proxied_true_is_refused_with_the_reason():
    message = error_of('[[hosts]]\nname = "local.example.com"\naddress = "192.168.1.100"\nproxied = true\n')
    assert "hosts[0].proxied" in message
    assert "edge addresses" in message and "LAN" in message


@pytest.mark.parametrize(("body", "key", "words"), [
    ('address = "192.168.1.300"', "hosts[0].address", "not an IPv4 or IPv6 address"),
    ('address = "127.0.0.1"', "hosts[0].address", "loopback"),
    ('address = "fe80::1"', "hosts[0].address", "link-local"),
    ('address = "0.0.0.0"', "hosts[0].address", "unspecified"),
    ('address = "auto"', "hosts[0].address", 'interface = "auto"'),
    ('address = ["10.0.0.1", "10.0.0.2"]', "hosts[0].address", "round-robin"),
    ('address = []', "hosts[0].address", "at least one"),
    ('address = "10.0.0.1"\ninterface = "eth0"', "hosts[0]", "exactly one address source"),
    ('ttl = 60', "hosts[0]", "exactly one address source"),
    ('interface = "eth0; rm"', "hosts[0].interface", "not a network interface name"),
    ('address = "10.0.0.1"\naaaa = true', "hosts[0]", "only applies to an interface"),
    ('address = "10.0.0.1"\nttl = 30', "hosts[0].ttl", "60"),
    ('address = "10.0.0.1"\nttl = "fast"', "hosts[0].ttl", ""),
    ('address = "10.0.0.1"\ncolour = "gray"', "hosts[0].colour", "unknown key"),
])
def test_bad_hosts_name_the_key(body: str, key: str, words: str):
    message = error_of(f'[[hosts]]\nname = "local.example.com"\n{body}\n')
    assert f"  {key}" in message and words in message


def test_bad_names():
    assert "hosts[0].name" in error_of('[[hosts]]\nname = "*.example.com"\naddress = "10.0.0.1"\n')
    assert "IP address" in error_of('[[hosts]]\nname = "10.0.0.1"\naddress = "10.0.0.1"\n')
    message = error_of('[[hosts]]\nname = "a.example.com"\naddress = "10.0.0.1"\n'
                       '[[hosts]]\nname = "A.example.com"\naddress = "10.0.0.2"\n')
    assert "  hosts: host names must be unique: a.example.com" in message


@pytest.mark.parametrize(("body", "key"), [
    ("interval = 5", "dns_records.interval"),
    ('marker = ""', "dns_records.marker"),
    (f'marker = "{"x" * 101}"', "dns_records.marker"),
    ("keep_removed = 3", "dns_records.keep_removed"),
    ("address_poll_interval = 0", "dns_records.address_poll_interval"),
])
def test_bad_dns_records_section(body: str, key: str):
    assert f"  {key}" in error_of(f"[dns_records]\n{body}\n")
