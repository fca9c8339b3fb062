"""The [http] section: addresses, the loopback rule, credentials files; and what the CLI imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from certd.config import parse_config
from certd.config.http import parse_listen
from certd.errors import ConfigError, SecretError
from certd.http.credentials import load_credentials, parse_users


def _http(body: str):  # type: ignore[no-untyped-def]
    return parse_config(f"[http]\n{body}\n").http


def test_defaults_bind_loopback_only() -> None:
    http = parse_config("").http
    assert http.enabled and http.listen == ["127.0.0.1:9402"] and http.auth is None
    assert [a.loopback for a in http.addresses] == [True]


@pytest.mark.parametrize(("text", "host", "port", "loopback"), [
    ("127.0.0.1:9402", "127.0.0.1", 9402, True),
    ("127.0.0.2:80", "127.0.0.2", 80, True),          # all of 127.0.0.0/8 is loopback
    ("[::1]:9402", "::1", 9402, True),
    ("localhost:0", "127.0.0.1", 0, True),
    ("0.0.0.0:9402", "0.0.0.0", 9402, False),
    ("[::]:9402", "::", 9402, False),
    ("192.168.1.10:9402", "192.168.1.10", 9402, False),
])
def test_listen_addresses(text: str, host: str, port: int, loopback: bool) -> None:
    address = parse_listen(text)
    assert (address.host, address.port, address.loopback) == (host, port, loopback)


@pytest.mark.parametrize(("body", "message"), [
    ('listen = ["0.0.0.0:9402"]', "http: listen 0.0.0.0:9402 is not a loopback address: set [http.auth]"),
    ('listen = ["127.0.0.1:9402", "[::]:9402"]', "http: listen [::]:9402 is not a loopback address"),
    ('listen = ["example.com:9402"]', "http.listen: Value error, 'example.com:9402': 'example.com' is not an IP address"),
    ('listen = ["::1:9402"]', "expected ADDRESS:PORT"),
    ('listen = ["127.0.0.1:70000"]', "the port must be a number from 0 to 65535"),
    ('listen = ["127.0.0.1:9402", "127.0.0.1:9402"]', "an address is listed twice"),
    ('listen = []', "http.listen"),
    ("[http.auth]\nopen_probes = false", "http.auth: Value error, set token_env, token_file or users_file"),
])
def test_bad_http_sections_name_the_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _http(body)
    assert message.replace("Value error, ", "") in str(caught.value)


def test_a_non_loopback_address_with_credentials_or_disabled_is_fine() -> None:
    assert _http('listen = ["0.0.0.0:9402"]\n[http.auth]\ntoken_env = "T"').auth.token_env == "T"
    assert not _http('enabled = false\nlisten = ["0.0.0.0:9402"]').enabled


def test_credentials_files(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from argon2 import PasswordHasher

    users = tmp_path / "users"
    users.write_text(f"# ops\nops:{PasswordHasher().hash('pw-123')}\n")
    users.chmod(0o640)
    auth = _http(f'[http.auth]\nusers_file = "{users}"').auth
    with pytest.raises(SecretError, match=r"http.auth.users_file.*readable by group or others"):
        load_credentials(auth)
    users.chmod(0o600)
    credentials = load_credentials(auth)
    assert credentials.verify("ops", "pw-123") and credentials.remembered("ops", "pw-123")
    assert not credentials.verify("ops", "wrong") and not credentials.verify("nobody", "pw-123")
    with pytest.raises(ConfigError, match="line 1: expected user:"):
        parse_users("ops:plaintext-password\n", "users")
    monkeypatch.delenv("CERTD_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError, match="http.auth.token_env: environment variable CERTD_TEST_UNSET is not set"):
        load_credentials(_http('[http.auth]\ntoken_env = "CERTD_TEST_UNSET"').auth)


def test_commands_without_a_server_do_not_load_it() -> None:
    """aiohttp, Jinja2 and prometheus_client load in `certd run`/`certd serve` only."""
    code = ("import sys; from certd.cli import build_parser; build_parser(); import certd.issue.order, "
            "certd.dns.cloudflare, certd.ocpp.server, certd.cli.status, certd.cli.config_cmd; "
            "print(sorted(m for m in ('aiohttp', 'jinja2', 'prometheus_client') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
