"""`certd check-config` finds what the commands using each part would trip over, before they run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from certd.cli import main
from certd.sandbox.certd_config import ocpp_listener, ocpp_toml


@pytest.fixture
def check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "x" * 40)
    secret = tmp_path / "registry-hmac"
    secret.write_text("s" * 32 + "\n")
    os.chmod(secret, 0o600)
    base = (f'state_dir = "{tmp_path / "state"}"\n'
            '[[certificates]]\nname = "web"\ndomains = ["local.example.com"]\n'
            '[[trust.bundles]]\nname = "fleet"\n'
            f'[[trust.registries]]\nname = "reg"\nurl = "https://reg.example"\nhmac_secret_file = "{secret}"\n')

    def run(extra: str = "", replace: tuple[str, str] | None = None) -> int:
        text = base + extra
        if replace:
            text = text.replace(*replace)
        path = tmp_path / "certd.toml"
        path.write_text(text)
        return main(["--config", str(path), "check-config"])

    run.secret = secret  # type: ignore[attr-defined]
    return run


def test_a_good_config_is_ok(check, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert check() == 0
    out = capsys.readouterr().out
    assert out.startswith("config OK: 1 certificate(s)") and "fleet registry reg: secrets readable" in out


def test_a_world_readable_registry_secret_fails_the_check(check, capsys) -> None:  # type: ignore[no-untyped-def]
    os.chmod(check.secret, 0o644)
    assert check() == 2
    err = capsys.readouterr().err
    assert "HMAC secret of registry reg" in err and "s" * 32 not in err


def test_unknown_names_across_sections_fail_the_check(check, capsys) -> None:  # type: ignore[no-untyped-def]
    assert check(replace=('[[trust.bundles]]\nname = "fleet"\n',
                          '[[trust.bundles]]\nname = "fleet"\ncertificates = ["nope"]\n')) == 2
    assert "trust.bundles[0].certificates[0]: no certificate named 'nope'" in capsys.readouterr().err
    listener = ocpp_toml([ocpp_listener("l", "local.example.com", port=9000, certificates=["other"])])
    assert check(extra=listener) == 2
    assert "ocpp.listeners[0].certificates[0]: no [[certificates]] entry named 'other'" in capsys.readouterr().err


def test_missing_files_it_names_fail_the_check(check, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "registry-ca.pem"
    assert check(replace=('url = "https://reg.example"\n',
                          f'url = "https://reg.example"\nca_file = "{missing}"\n')) == 2
    assert f"trust.registries[0].ca_file: {missing} does not exist" in capsys.readouterr().err


def test_mqtt_password_and_files_are_checked(check, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    password = tmp_path / "mqtt-password"
    password.write_text("broker-secret-value\n")
    os.chmod(password, 0o600)
    mqtt = (f'[mqtt]\nhost = "127.0.0.1"\nusername = "certd"\npassword_file = "{password}"\n'
            f'tls = true\nca_file = "{tmp_path / "no-such-ca.pem"}"\n')
    assert check(extra=mqtt) == 2
    err = capsys.readouterr().err
    assert f"mqtt.ca_file: {tmp_path / 'no-such-ca.pem'} does not exist" in err

    (tmp_path / "no-such-ca.pem").write_text("ca")
    assert check(extra=mqtt) == 0
    os.chmod(password, 0o644)
    assert check(extra=mqtt) == 2
    err = capsys.readouterr().err
    assert "MQTT password (mqtt.password_env or mqtt.password_file)" in err and "broker-secret-value" not in err
