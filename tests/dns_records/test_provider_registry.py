"""`[dns] provider` picks the provider from the one registry; a wrong name is caught with its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from certd.cli import main
from certd.config import parse_config
from certd.dns.cloudflare import CloudflareDNS
from certd.dns.memory import MemoryDNS
from certd.dns.registry import PROVIDERS, open_dns
from certd.errors import ConfigError, SecretError
from certd.sandbox.certd_config import toml_str


def test_cloudflare_is_the_default_and_reads_its_token(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config("")
    assert config.dns.provider == "cloudflare"
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    with pytest.raises(SecretError, match="Cloudflare API token is not set"):
        open_dns(config)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "t" * 40)
    assert isinstance(open_dns(config), CloudflareDNS)


def test_memory_is_one_provider_per_state_dir(tmp_path: Path) -> None:
    def config(state: str):  # type: ignore[no-untyped-def]
        return parse_config(f'state_dir = {toml_str(tmp_path / state)}\n[dns]\nprovider = "memory"\n')

    first = open_dns(config("a"))
    assert isinstance(first, MemoryDNS)
    assert open_dns(config("a")) is first and open_dns(config("b")) is not first


def test_an_unknown_provider_names_the_key_and_the_registered_ones() -> None:
    config = parse_config('[dns]\nprovider = "route53"\n')
    with pytest.raises(ConfigError) as info:
        open_dns(config)
    assert str(info.value) == "dns.provider: unknown DNS provider 'route53' (registered: cloudflare, memory)"
    assert sorted(PROVIDERS) == ["cloudflare", "memory"]


def test_check_config_opens_the_configured_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    path = tmp_path / "certd.toml"
    base = f'state_dir = {toml_str(tmp_path / "state")}\n'

    path.write_text(base + '[dns]\nprovider = "route53"\n')
    assert main(["--config", str(path), "check-config"]) == 2
    assert "dns.provider: unknown DNS provider 'route53' (registered: cloudflare, memory)" in capsys.readouterr().err

    path.write_text(base)  # cloudflare, without a token
    assert main(["--config", str(path), "check-config"]) == 2
    assert "Cloudflare API token" in capsys.readouterr().err

    path.write_text(base + '[dns]\nprovider = "memory"\n')  # needs no Cloudflare token
    assert main(["--config", str(path), "check-config"]) == 0
    assert capsys.readouterr().out.startswith("config OK")
