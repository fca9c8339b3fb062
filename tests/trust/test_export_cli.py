"""Export formats on disk and the `certd bundle` commands."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from cryptography import x509

from certd.store.db import session_scope
from certd.trust import TrustError, versions
from certd.trust.export import export_version
from certd.trust.quectel import format_checksum, xor16
from certd.trust.track import on_issued
from tests import pki
from tests.trust.conftest import bundle_toml


@pytest.fixture
def two_versions(world):
    old_root, new_root = pki.root("Export Root Old"), pki.root("Export Root New")
    old_inter, new_inter = pki.intermediate("Export Inter Old", old_root), pki.intermediate("Export Inter New", new_root)
    world.trust_anchor(old_root, new_root)
    config = world.config(bundle_toml(world.anchors_dir, extra="recent_days = 0.00001"))
    on_issued(config, world.engine, world.issue("ocpp", ["ocpp.example.com"],
                                                pki.leaf(["ocpp.example.com"], old_inter), [old_inter]), deliver=False)
    on_issued(config, world.engine, world.issue("ocpp", ["ocpp.example.com"],
                                                pki.leaf(["ocpp.example.com"], new_inter), [new_inter]), deliver=False)
    return config


def cli(world, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "certd", "--config", str(world.tmp / "certd.toml"), *args],
                          env=dict(os.environ), capture_output=True, text=True, timeout=60)


def test_each_format_writes_what_it_promises(world, two_versions, tmp_path) -> None:
    with session_scope(world.engine) as session:
        v2 = versions.to_export(versions.get(session, "fleet", "full"))
        v1 = versions.to_export(versions.get(session, "fleet", "full", 1))
    out = tmp_path / "out"
    (pem,) = export_version(v2, "pem", out)
    assert pem.read_text() == v2.pem and hashlib.sha256(pem.read_bytes()).hexdigest() == v2.sha256
    (manifest,) = export_version(v2, "manifest", out)
    doc = json.loads(manifest.read_text())
    assert doc["version"] == 2 and doc["sha256"] == v2.sha256 and doc["size"] == len(v2.pem.encode())
    assert doc["xor16"] == format_checksum(xor16(v2.pem.encode()))
    # der: one DER and one PEM per certificate; files of the older version are removed
    old_files = export_version(v1, "der", out)
    assert {p.name for p in old_files if "old" in p.name}
    new_files = export_version(v2, "der", out)
    ders = sorted(p for p in out.iterdir() if p.suffix == ".der")
    assert ders == sorted(p for p in new_files if p.suffix == ".der") and len(ders) == 2
    for der in ders:
        cert = x509.load_der_x509_certificate(der.read_bytes())
        assert "Export" in cert.subject.rfc4514_string() and "Old" not in cert.subject.rfc4514_string()
        assert der.with_suffix(".pem").exists()
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temp files left behind


def test_export_errors_are_clear(world, two_versions, tmp_path) -> None:
    with session_scope(world.engine) as session:
        v2 = versions.to_export(versions.get(session, "fleet", "full"))
    with pytest.raises(TrustError, match="unknown export format 'zip'"):
        export_version(v2, "zip", tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TrustError, match="cannot create export directory"):
        export_version(v2, "pem", blocker / "sub")


def test_bundle_cli_show_diff_history_export(world, two_versions, tmp_path) -> None:
    show = cli(world, "bundle", "show", "fleet", "--flavour", "full")
    assert show.returncode == 0, show.stderr
    assert "fleet (full) v2" in show.stdout and "CN=Export Root New" in show.stdout
    assert "CN=Export Root Old" not in show.stdout  # outside the (tiny) recent window
    diff = cli(world, "bundle", "diff", "fleet")
    assert "v1 -> v2" in diff.stdout
    assert "+ root" in diff.stdout and "- root" in diff.stdout and "CN=Export Inter New" in diff.stdout
    explicit = cli(world, "bundle", "diff", "fleet", "1", "2", "--flavour", "roots")
    assert "+ root         CN=Export Root New" in explicit.stdout
    history = cli(world, "bundle", "history", "fleet", "--flavour", "full")
    assert "2 version(s)" in history.stdout and "v1" in history.stdout and "issued ocpp" in history.stdout
    js = json.loads(cli(world, "bundle", "show", "--json").stdout)
    assert sorted((m["flavour"], m["version"]) for m in js) == [("full", 2), ("roots", 2)]
    out = tmp_path / "cli-out"
    exported = cli(world, "bundle", "export", "fleet", "--format", "pem", "--out", str(out), "--version", "1")
    assert exported.returncode == 0, exported.stderr
    subjects = {c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates((out / "fleet-full.pem").read_bytes())}
    assert any("Export Root Old" in s for s in subjects) and not any("New" in s for s in subjects)
    missing = cli(world, "bundle", "export", "fleet", "--format", "pem", "--out", str(out), "--version", "9")
    assert missing.returncode == 1 and "has no version 9 (versions: v1, v2)" in missing.stderr
    unknown = cli(world, "bundle", "show", "nope")
    assert unknown.returncode != 0 and "no bundle named 'nope'" in unknown.stderr


def test_config_errors_name_the_key(world) -> None:
    from certd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"trust\.registries\.0.*hmac_secret_env or hmac_secret_file|trust\.registries\[0\]"):
        world.config('[[trust.registries]]\nname = "r"\nurl = "https://reg.example"\n')
    with pytest.raises(ConfigError, match=r"trust\.bundles\[0\]\.quectel\.ciphersuite: .*0xC02F"):
        world.config('[[trust.bundles]]\nname = "b"\n[trust.bundles.quectel]\nciphersuite = "C02F"\n')
    with pytest.raises(ConfigError, match="anchors 'corp' is not an anchor set"):
        world.config('[[trust.bundles]]\nname = "b"\nanchors = "corp"\n')
    with pytest.raises(ConfigError, match=r"trust\.registries\[0\]\.url: .*not an http"):
        world.config('[[trust.registries]]\nname = "r"\nurl = "ftp://x"\nhmac_secret_env = "X"\n')
