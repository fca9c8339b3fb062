"""Config validation: errors name the key path; unknown keys are errors; secrets never inline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from certd.config import load_config, parse_config, resolve_config_path
from certd.errors import ConfigError, SecretError
from certd.secrets import read_secret

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.toml")
    return str(info.value)


def test_defaults_are_letsencrypt_classic_rsa2048() -> None:
    config = parse_config('[[certificates]]\nname = "web"\ndomains = ["example.com"]\n')
    assert config.acme.directory_url == "https://acme-v02.api.letsencrypt.org/directory"
    assert config.acme.profile == "classic"
    assert config.certificates[0].key_type == "rsa2048"
    assert config.db_url.startswith("sqlite:///")


def test_staging_alias() -> None:
    config = parse_config('[acme]\ndirectory = "staging"\n')
    assert "acme-staging-v02" in config.acme.directory_url


def test_unknown_keys_are_errors_with_path() -> None:
    message = error_of('[acme]\ndirectroy = "staging"\n')
    assert "acme.directroy: unknown key" in message
    message = error_of('[[certificates]]\nname = "a"\ndomains = ["a.example.com"]\n'
                       'targets = [{ fullchain = "/x", colour = "blue" }]\n')
    assert "certificates[0].targets[0].colour: unknown key" in message


def test_domain_validation() -> None:
    message = error_of('[[certificates]]\nname = "a"\ndomains = ["ok.example.com", "bad_name..com", "10.0.0.1"]\n')
    assert "certificates[0].domains" in message
    message = error_of('[[certificates]]\nname = "a"\ndomains = ["a.*.example.com"]\n')
    assert "wildcards only" in message
    message = error_of('[[certificates]]\nname = "a"\ndomains = ["x.example.com", "X.example.com"]\n')
    assert "listed twice" in message


def test_duplicate_certificate_names() -> None:
    cert = '[[certificates]]\nname = "a"\ndomains = ["a.example.com"]\n'
    assert "unique" in error_of(cert + cert)


def test_world_readable_key_mode_refused() -> None:
    message = error_of('[[certificates]]\nname = "a"\ndomains = ["a.example.com"]\n'
                       'targets = [{ privkey = "/k.pem", key_mode = "0644" }]\n')
    assert "world-readable" in message


def test_not_toml() -> None:
    assert "not valid TOML" in error_of("[acme\n")


def test_missing_file_names_the_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config PATH or set CERTD_CONFIG"):
        load_config(tmp_path / "nope.toml")


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTD_CONFIG", "/from/env.toml")
    assert str(resolve_config_path("/cli.toml")) == "/cli.toml"
    assert str(resolve_config_path(None)) == "/from/env.toml"
    monkeypatch.delenv("CERTD_CONFIG")
    assert str(resolve_config_path(None)) == "/etc/certd/certd.toml"


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "cf-token"
    token.write_text("s3cr3t-token-value\n")
    os.chmod(token, 0o644)
    with pytest.raises(SecretError) as info:
        read_secret(env=None, file=str(token), what="Cloudflare API token")
    assert "chmod 600" in str(info.value) and "s3cr3t" not in str(info.value)
    os.chmod(token, 0o600)
    assert read_secret(env=None, file=str(token), what="Cloudflare API token") == "s3cr3t-token-value"


def test_token_sources_are_exclusive() -> None:
    assert "not both" in error_of('[cloudflare]\napi_token_env = "A"\napi_token_file = "/b"\n')


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_examples_are_valid(example: str) -> None:
    config = load_config(EXAMPLES / example)
    assert config.certificates, f"{example} configures no certificate"


def test_file_modes_must_be_quoted_octal_strings() -> None:
    """`key_mode = 440` is decimal 440 = 0670 in octal (a group-writable key): refused."""
    cert = '[[certificates]]\nname = "a"\ndomains = ["a.example.com"]\n'
    for raw in ("440", "400", "0o440", "true"):
        message = error_of(cert + f'targets = [{{ privkey = "/k.pem", key_mode = {raw} }}]\n')
        assert "key_mode" in message and 'quoted octal strings like "0640"' in message, message
    config = parse_config(cert + 'targets = [{ privkey = "/k.pem", key_mode = "0440", mode = "0640" }]\n')
    target = config.certificates[0].targets[0]
    assert (target.key_mode, target.mode) == (0o440, 0o640)
