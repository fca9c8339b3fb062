"""Atomic deploys, archives and hooks, on real files."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest

from certd.config import parse_config
from certd.deploy import deploy, write_targets
from certd.errors import DeployError
from certd.store.models import IssuedCertificate


def issued(serial: str = "01") -> IssuedCertificate:
    now = dt.datetime.now(dt.timezone.utc)
    return IssuedCertificate(
        id=1, name="web", domains="local.example.com", key_type="rsa2048", serial=serial,
        not_before=now, not_after=now + dt.timedelta(days=90), issuer="Test CA",
        cert_pem=f"-----BEGIN CERTIFICATE-----\nLEAF{serial}\n-----END CERTIFICATE-----\n",
        chain_pem="-----BEGIN CERTIFICATE-----\nINTERMEDIATE\n-----END CERTIFICATE-----\n",
        key_pem=f"-----BEGIN PRIVATE KEY-----\nKEY{serial}\n-----END PRIVATE KEY-----\n",
        chain_fingerprints="[]", directory_url="https://ca.test/dir",
    )


def cert_config(tmp_path: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    return parse_config(f'''
[[certificates]]
name = "web"
domains = ["local.example.com", "*.example.com"]
targets = [{{ fullchain = "{tmp_path}/ssl/fullchain.pem", privkey = "{tmp_path}/ssl/privkey.pem", mode = "0640" }}]
{extra}
''').certificates[0]


def test_modes_missing_dirs_and_live_copy(tmp_path: Path) -> None:
    result = write_targets(cert_config(tmp_path), issued(), str(tmp_path / "state"))
    ssl = tmp_path / "ssl"
    assert stat.S_IMODE((ssl / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((ssl / "fullchain.pem").stat().st_mode) == 0o640
    assert (ssl / "fullchain.pem").read_text().count("BEGIN CERTIFICATE") == 2
    live = tmp_path / "state" / "live" / "web"
    assert sorted(p.name for p in live.iterdir()) == ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"]
    assert len(result.written) == 6 and result.archived == []


def test_identical_content_is_not_rewritten(tmp_path: Path) -> None:
    config = cert_config(tmp_path)
    write_targets(config, issued(), str(tmp_path / "state"))
    inode = (tmp_path / "ssl" / "fullchain.pem").stat().st_ino
    again = write_targets(config, issued(), str(tmp_path / "state"))
    assert again.written == [] and len(again.unchanged) == 6
    assert (tmp_path / "ssl" / "fullchain.pem").stat().st_ino == inode


def test_archive_keeps_a_few_versions(tmp_path: Path) -> None:
    config = cert_config(tmp_path)
    for n in range(8):
        write_targets(config, issued(f"{n:02d}"), str(tmp_path / "state"))
    versions = sorted((tmp_path / "state" / "archive" / "web").iterdir())
    assert len(versions) == 5
    newest = versions[-1]
    assert "LEAF06" in next(newest.glob("*fullchain.pem")).read_text()


def test_unwritable_target_replaces_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "ssl"
    blocker.write_text("a file where a directory should be")
    config = cert_config(tmp_path)
    with pytest.raises(DeployError, match="nothing was replaced"):
        write_targets(config, issued(), str(tmp_path / "state"))
    live = tmp_path / "state" / "live" / "web"
    assert not list(live.glob("*.pem"))  # the live copy was staged but not renamed
    assert not [p for p in live.iterdir() if p.name.endswith(".tmp")]


def test_hooks_get_certbot_variables_and_failures_are_reported(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "must-not-leak")
    out = tmp_path / "hook.out"
    config = cert_config(tmp_path, extra=(
        f'deploy_hooks = ["echo \\"$RENEWED_LINEAGE|$RENEWED_DOMAINS|${{CLOUDFLARE_API_TOKEN:-none}}\\" > {out}", '
        '"echo broken >&2; exit 3"]\nhook_timeout = 5'))
    result = deploy(config, issued(), str(tmp_path / "state"), hide_env=("CLOUDFLARE_API_TOKEN",))
    lineage, domains, token = out.read_text().strip().split("|")
    assert lineage == str(tmp_path / "state" / "live" / "web")
    assert (Path(lineage) / "fullchain.pem").exists()
    assert domains == "local.example.com *.example.com"
    assert token == "none"
    assert [h.ok for h in result.hooks] == [True, False]
    assert "exit 3: broken" in result.hooks[1].detail
    assert not result.hooks_ok
    assert (tmp_path / "ssl" / "fullchain.pem").exists()  # a failing hook never undoes the deploy


def test_hook_timeout(tmp_path: Path) -> None:
    config = cert_config(tmp_path, extra='deploy_hooks = ["sleep 5"]\nhook_timeout = 0.3')
    result = deploy(config, issued(), str(tmp_path / "state"))
    assert not result.hooks[0].ok and "timed out" in result.hooks[0].detail


def test_privkey_never_world_readable_even_while_written(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        write_targets(cert_config(tmp_path), issued(), str(tmp_path / "state"))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "ssl" / "privkey.pem").stat().st_mode) == 0o600
