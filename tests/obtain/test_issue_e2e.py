"""End to end against Pebble: real DNS-01 validation through the Cloudflare emulator and its DNS server."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.verification import PolicyBuilder, Store
from sqlmodel import select

from certd.renewal import pipeline
from certd.issue.keys import load_key, split_pem_chain
from certd.sandbox import PebbleServer, SandboxWorld
from certd.store.db import session_scope
from certd.store.models import AcmeAccount, ChallengeRecord, IssuanceAttempt
from tests.obtain.conftest import cert_toml


def verify_chain(fullchain_pem: str, root_pem: str, host: str) -> list[x509.Certificate]:
    certs = [x509.load_pem_x509_certificate(p.encode()) for p in split_pem_chain(fullchain_pem)]
    store = Store([x509.load_pem_x509_certificate(root_pem.encode())])
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(host))
    return verifier.verify(certs[0], certs[1:])


def txt_records(world: SandboxWorld) -> list[dict]:
    return [r for r in world.emulator.records() if r["type"] == "TXT"]


def test_one_name_rsa2048_chain_verifies_to_pebble_root(make_setup, tmp_path: Path) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"], tmp_path / "ssl"))
    result = pipeline.issue_and_deploy(setup.config, setup.engine, "web")

    fullchain = (tmp_path / "ssl" / "fullchain.pem").read_text()
    verify_chain(fullchain, setup.pebble.roots()[0], "local.example.com")
    key = load_key((tmp_path / "ssl" / "privkey.pem").read_bytes())
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    leaf = x509.load_pem_x509_certificate(fullchain.encode())
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert result.issued.key_type == "rsa2048"
    assert stat.S_IMODE(os.stat(tmp_path / "ssl" / "privkey.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "ssl" / "fullchain.pem").st_mode) == 0o644
    assert (tmp_path / "ssl" / "cert.pem").read_text() + (tmp_path / "ssl" / "chain.pem").read_text() == fullchain
    assert txt_records(setup.world) == []


def test_sans_and_wildcard_share_one_txt_name(make_setup, tmp_path: Path) -> None:
    domains = ["example.com", "*.example.com", "local.example.com", "ocpp.example.net"]
    setup = make_setup(cert_toml("multi", domains, tmp_path / "out"))
    pipeline.issue_and_deploy(setup.config, setup.engine, "multi")

    leaf = x509.load_pem_x509_certificate((tmp_path / "out" / "cert.pem").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(domains)
    # The CSR's CN is the first name: OCPP chargers check it.
    assert leaf.subject.rfc4514_string() == "CN=example.com" or "example.com" in san.get_values_for_type(x509.DNSName)
    created = [r for r in setup.world.emulator.requests if r.method == "POST" and r.path.endswith("/dns_records")]
    assert len(created) == 4  # one TXT per authorization, wildcard and base on one name
    assert txt_records(setup.world) == []


def test_reissue_replaces_files_and_archives_old(make_setup, tmp_path: Path) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"], tmp_path / "ssl"))
    first = pipeline.issue_and_deploy(setup.config, setup.engine, "web").issued
    old_fullchain = (tmp_path / "ssl" / "fullchain.pem").read_bytes()
    second = pipeline.issue_and_deploy(setup.config, setup.engine, "web").issued

    assert first.serial != second.serial
    new_fullchain = (tmp_path / "ssl" / "fullchain.pem").read_bytes()
    assert new_fullchain != old_fullchain
    assert x509.load_pem_x509_certificate(new_fullchain).serial_number == int(second.serial, 16)
    archive = tmp_path / "state" / "archive" / "web"
    archived = {p.read_bytes() for p in archive.rglob("*fullchain.pem")}
    assert old_fullchain in archived
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in archive.rglob("*.pem"))
    leftovers = [p for p in (tmp_path / "ssl").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_second_run_reuses_account(make_setup, tmp_path: Path) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    pipeline.issue_and_deploy(setup.config, setup.engine, "web")
    with session_scope(setup.engine) as session:
        first = session.exec(select(AcmeAccount)).all()
    result = setup.cli("issue", "web", "--force")
    assert result.returncode == 0, result.stderr
    with session_scope(setup.engine) as session:
        accounts = session.exec(select(AcmeAccount)).all()
    assert len(first) == len(accounts) == 1
    assert json.loads(accounts[0].registration_json)["uri"] == json.loads(first[0].registration_json)["uri"]


def test_issue_without_force_keeps_valid_certificate(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    assert setup.cli("issue", "web").returncode == 0
    again = setup.cli("issue", "web")
    assert again.returncode == 0, again.stderr
    assert "not due" in again.stdout
    with session_scope(setup.engine) as session:
        assert len(session.exec(select(IssuanceAttempt)).all()) == 1


def test_validation_failure_removes_txt_records(make_setup, tmp_path: Path) -> None:
    """Pebble asks a DNS server that never sees the records: a real validation failure."""
    blind = SandboxWorld(zones=["example.com"]).start()
    try:
        setup = make_setup(cert_toml("web", ["local.example.com"]))
        with PebbleServer(blind.dns_addr) as blind_pebble:
            text = setup.config_path.read_text().replace(setup.pebble.directory_url, blind_pebble.directory_url)
            text = text.replace(str(setup.pebble.https_ca_path), str(blind_pebble.https_ca_path))
            setup.config_path.write_text(text)
            result = setup.cli("issue", "web")
        assert result.returncode == 1
        assert "validation failed for local.example.com" in result.stderr
        assert txt_records(setup.world) == []
        with session_scope(setup.engine) as session:
            attempt = session.exec(select(IssuanceAttempt)).one()
            assert attempt.outcome == "failure" and "validation failed" in (attempt.error or "")
            assert session.exec(select(ChallengeRecord)).all() == []
    finally:
        blind.stop()


def test_preferred_chain_picks_alternate(cf_world: SandboxWorld, make_setup, tmp_path: Path) -> None:
    with PebbleServer(cf_world.dns_addr, alternate_roots=1) as alt_pebble:
        setup = make_setup(cert_toml("web", ["local.example.com"], tmp_path / "ssl"))
        text = setup.config_path.read_text().replace(setup.pebble.directory_url, alt_pebble.directory_url)
        text = text.replace(str(setup.pebble.https_ca_path), str(alt_pebble.https_ca_path))
        roots = alt_pebble.roots()
        assert len(roots) == 2
        alt_root = x509.load_pem_x509_certificate(roots[1].encode())
        alt_cn = alt_root.subject.rfc4514_string().removeprefix("CN=")
        text = text.replace("[acme]\n", f'[acme]\npreferred_chain = "{alt_cn}"\n')
        setup.config_path.write_text(text)
        result = setup.cli("issue", "web")
        assert result.returncode == 0, result.stderr
        fullchain = (tmp_path / "ssl" / "fullchain.pem").read_text()
        verify_chain(fullchain, roots[1], "local.example.com")
        with pytest.raises(Exception):
            verify_chain(fullchain, roots[0], "local.example.com")


def test_store_on_sqlite_and_postgresql(make_setup, db_url: str) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]), db_url=db_url)
    issued = pipeline.issue_and_deploy(setup.config, setup.engine, "web").issued
    current = pipeline.current_certificate(setup.engine, "web")
    assert current is not None and current.serial == issued.serial
    assert current.not_after.tzinfo is not None
    assert json.loads(current.chain_fingerprints)  # the chain is recorded
    status = setup.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    row = json.loads(status.stdout)[0]
    assert row["serial"] == issued.serial and row["last_outcome"] == "success"


def test_ca_that_forgot_the_account_gets_it_registered_again(make_setup) -> None:
    """Pebble keeps accounts in memory: after a restart the stored registration is unknown."""
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    pipeline.issue_and_deploy(setup.config, setup.engine, "web")
    with session_scope(setup.engine) as session:
        before = session.exec(select(AcmeAccount)).one()
    setup.pebble.restart()
    issued = pipeline.issue_and_deploy(setup.config, setup.engine, "web").issued
    verify_chain(issued.cert_pem + issued.chain_pem, setup.pebble.roots()[0], "local.example.com")
    with session_scope(setup.engine) as session:
        after = session.exec(select(AcmeAccount)).one()
    assert after.key_pem == before.key_pem  # same key, new registration
    assert json.loads(after.registration_json)["uri"] != json.loads(before.registration_json)["uri"]
