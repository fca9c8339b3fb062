"""The [ocpp] section: defaults, and errors that name the key path."""

import pytest

from certd.config import parse_config
from certd.config.ocpp import listener_certificate_errors
from certd.errors import ConfigError

BASE = '''
[[certificates]]
name = "fleet-rsa"
domains = ["example.com"]
'''


def test_defaults_and_a_gsm_listener() -> None:
    config = parse_config(BASE + '''
[ocpp]
unknown_chargers = "register"
heartbeat_classes = { wallbox = 120 }

[[ocpp.listeners]]
host = "example.com"
port = 443
certificates = ["fleet-rsa"]
tls_profile = "gsm"
paths = ["/ocpp/{id}"]
''')
    ocpp = config.ocpp
    assert ocpp.handshake_timeout == 60
    assert ocpp.ping_interval == 30
    assert ocpp.heartbeat_classes == {"default": 300, "gsm": 60, "wallbox": 120}
    listener = ocpp.listeners[0]
    assert listener.tls_profile == "gsm" and listener.paths == ["/ocpp/{id}"]
    assert listener.subprotocols[0] == "ocpp2.0.1" and "ocpp1.6" in listener.subprotocols
    assert listener_certificate_errors(ocpp, ["fleet-rsa"]) == []


@pytest.mark.parametrize("snippet, key_path, fragment", [
    ('host = "example.com"\nport = 443\ncertificates = ["x"]\npaths = ["/ocpp/{id}/x"]',
     "ocpp.listeners[0].paths", "ends with the segment '{id}'"),
    ('host = "example.com"\nport = 443', "ocpp.listeners[0]", "needs certificates"),
    ('host = "example.com"\nport = 443\ninsecure = true\ncertificates = ["fleet-rsa"]',
     "ocpp.listeners[0]", "insecure = true serves plain ws://"),
    ('host = "example.com"\nport = 70000\ncertificates = ["fleet-rsa"]',
     "ocpp.listeners[0].port", "less than 65536"),
    ('host = "example.com"\nport = 443\ncertificates = ["fleet-rsa"]\ntls_profile = "old"',
     "ocpp.listeners[0].tls_profile", "'gsm' or 'modern'"),
    ('host = "example.com"\nport = 443\ncertificates = ["fleet-rsa"]\nlisten = 1',
     "ocpp.listeners[0].listen", "unknown key"),
    ('host = "192.168.1.5"\nport = 443\ncertificates = ["fleet-rsa"]',
     "ocpp.listeners[0].host", "is an IP address"),
])
def test_listener_errors_name_the_key(snippet: str, key_path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "[[ocpp.listeners]]\n" + snippet)
    line = next(l for l in str(info.value).splitlines() if l.strip().startswith(key_path + ":"))
    assert fragment in line


def test_unknown_default_class_is_refused() -> None:
    with pytest.raises(ConfigError, match="default_heartbeat_class 'nope'"):
        parse_config('[ocpp]\ndefault_heartbeat_class = "nope"\n')


def test_unknown_certificate_name_is_reported_with_its_path() -> None:
    config = parse_config(BASE + '''
[[ocpp.listeners]]
host = "example.com"
port = 443
certificates = ["fleet-rsa", "fleet-ec"]
''')
    errors = listener_certificate_errors(config.ocpp, [c.name for c in config.certificates])
    assert errors == [
        "ocpp.listeners[0].certificates[1]: no [[certificates]] entry named 'fleet-ec' "
        "(known: fleet-rsa)"
    ]


def test_two_listeners_on_one_port_are_refused() -> None:
    listener = '[[ocpp.listeners]]\nhost = "example.com"\nbind = "127.0.0.1"\nport = 9000\ncertificates = ["fleet-rsa"]\n'
    with pytest.raises(ConfigError, match="127.0.0.1 port 9000 is used by two listeners"):
        parse_config(BASE + listener + listener)


@pytest.mark.parametrize("example", ["certd.toml", "gsm-fleet.toml", "homeassistant-wallbox.toml"])
def test_examples_have_consistent_ocpp_listeners(example: str) -> None:
    from pathlib import Path

    from certd.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "examples" / example)
    assert config.ocpp.listeners, f"{example} documents no OCPP listener"
    assert listener_certificate_errors(config.ocpp, [c.name for c in config.certificates]) == []
