"""The charger CA's key: an owner-only file or sealed in the store, import, two levels, and a scan
showing the key (and the key-encryption key) never reach a log line, an error or CLI output.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certd.chargerca import ca_store, keystore, records
from certd.cli import main as certd_main
from certd.config import Config
from certd.errors import CertdError, SecretError
from certd.store.charger_ca import ChargerCaCert
from certd.store.db import session_scope
from certd.store.types import utcnow
from tests.chargerca.chargers import ORG, Charger, next_event, running_client
from tests.chargerca.conftest import PASSWORD, connect, make_config, register, run, running, serve_certificate, server_trust
from tests.pki import MiniCA, key_pem as _key_pem

KEK = base64.b64encode(bytes(range(32))).decode()
KEK_ENV = "CERTD_TEST_CHARGER_CA_KEK"


def config_with(tmp_path: Path, ca_file: Path, **charger_ca) -> Config:  # type: ignore[no-untyped-def]
    return make_config(ca_file, tmp_path, charger_ca=charger_ca)


def store_mode(tmp_path: Path, ca_file: Path, **extra) -> Config:  # type: ignore[no-untyped-def]
    return config_with(tmp_path, ca_file, key_storage="store", key_dir=None, key_encryption_key_env=KEK_ENV,
                       **extra)


def key_secrets(key_pem: bytes) -> list[str]:
    """Strings that would betray the key: its PEM lines and its DER in hex."""
    body = [line for line in key_pem.decode().splitlines() if line and not line.startswith("-----")]
    der = serialization.load_pem_private_key(key_pem, None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return body + [der.hex()[i:i + 32] for i in range(0, 256, 32)]


def test_file_storage_is_owner_only_and_refused_when_readable(engine, ca_file, tmp_path: Path) -> None:
    config = config_with(tmp_path, ca_file)
    row = ca_store.ensure_ca(engine, config, utcnow())
    path = keystore.key_path(config.ocpp.charger_ca, config.state_dir, row.fingerprint)  # type: ignore[arg-type]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ca_store.load_issuing(engine, config).fingerprint == row.fingerprint
    assert ca_store.ensure_ca(engine, config, utcnow()) == row  # once only
    key_pem = path.read_bytes()
    path.chmod(0o640)
    with pytest.raises(SecretError) as refused:
        ca_store.load_issuing(engine, config)
    assert "readable by group or others" in str(refused.value)
    assert not any(secret in str(refused.value) for secret in key_secrets(key_pem))


def test_store_storage_seals_the_key_under_the_kek(engine, ca_file, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = store_mode(tmp_path, ca_file)
    with pytest.raises(SecretError) as missing:
        ca_store.ensure_ca(engine, config, utcnow())
    assert KEK_ENV in str(missing.value)
    monkeypatch.setenv(KEK_ENV, KEK)
    row = ca_store.ensure_ca(engine, config, utcnow())
    with session_scope(engine) as session:
        stored = session.get(ChargerCaCert, 1)
        assert stored is not None and stored.key_sealed is not None and stored.key_path is None
        sealed = stored.key_sealed
    assert b"PRIVATE KEY" not in sealed and not (tmp_path / "ca-keys").exists()
    ca = ca_store.load_issuing(engine, config)
    assert ca.fingerprint == row.fingerprint
    key_pem = keystore.key_pem(ca.key)
    assert not any(secret.encode() in sealed for secret in key_secrets(key_pem)[:3])

    for wrong in (base64.b64encode(bytes(32)).decode(), "not base64!", base64.b64encode(b"short").decode()):
        monkeypatch.setenv(KEK_ENV, wrong)
        with pytest.raises(CertdError) as failed:
            ca_store.load_issuing(engine, config)
        assert wrong not in str(failed.value) and "PRIVATE" not in str(failed.value)
    # A sealed key moved onto another CA row does not open (the fingerprint is bound in).
    monkeypatch.setenv(KEK_ENV, KEK)
    with pytest.raises(keystore.CaKeyError):
        keystore.unseal(sealed, base64.b64decode(KEK), b"0" * 64)


def test_two_level_keeps_the_root_key_offline(engine, ca_file, tmp_path: Path) -> None:
    config = config_with(tmp_path, ca_file)
    root_key = tmp_path / "offline" / "root.key"
    root_key.parent.mkdir()
    row = ca_store.create_ca(engine, config, utcnow(), two_level=True, root_key_out=root_key)
    assert stat.S_IMODE(root_key.stat().st_mode) == 0o600
    rows = ca_store.ca_rows(engine)
    assert [(r.role, r.key_storage) for r in rows] == [("root", "offline"), ("issuing", "file")]
    assert row.parent_fingerprint == rows[0].fingerprint
    ca = ca_store.load_issuing(engine, config)
    root = x509.load_pem_x509_certificate(rows[0].cert_pem.encode())
    ca.cert.verify_directly_issued_by(root)
    # What a charger gets: the issuing CA, not the root (the charger's trust anchor side).
    assert ca.chain_pem().count("BEGIN CERTIFICATE") == 1
    with pytest.raises(CertdError, match="exists already"):
        ca_store.create_ca(engine, config, utcnow())


def test_import_an_issuing_ca_with_its_chain(engine, ca_file, tmp_path: Path) -> None:
    outside = MiniCA("operator PKI")  # root -> intermediate: the intermediate signs chargers
    config = config_with(tmp_path, ca_file)
    with pytest.raises(CertdError, match="does not belong"):
        ca_store.import_ca(engine, config, outside.intermediate_pem.encode(),
                           _key_pem(outside.root_ca.key).encode(), None, utcnow())
    row = ca_store.import_ca(engine, config, outside.intermediate_pem.encode(),
                             _key_pem(outside.intermediate_ca.key).encode(), outside.root_pem.encode(), utcnow())
    assert [r.role for r in ca_store.ca_rows(engine)] == ["root", "issuing"]
    from tests.chargerca.chargers import new_key

    key = new_key("ec")
    issued = records.issue(engine, ca_store.load_issuing(engine, config), "CP-1", key.public_key(), "ec-p256",
                           config.ocpp.charger_ca, utcnow())  # type: ignore[arg-type]
    chain = x509.load_pem_x509_certificates(issued.chain_pem.encode())
    assert [c.subject for c in chain] == [chain[0].subject, outside.intermediate.subject]
    chain[0].verify_directly_issued_by(outside.intermediate)
    assert ca_store.delivery_chain(engine, issued.cert.serial) == issued.chain_pem
    assert row.fingerprint == ca_store.active_issuing(engine).fingerprint  # type: ignore[union-attr]


def test_ca_key_and_kek_never_reach_logs_errors_or_output(engine, ca, ca_file, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(KEK_ENV, KEK)
    serve_certificate(engine, ca)
    config = store_mode(tmp_path, ca_file, crl_file=str(tmp_path / "chargers.crl"))
    register(engine, "CP-1")
    charger = Charger("CP-1")
    lines: list[str] = []

    class Everything(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Everything(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(exc_info)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    errors: list[str] = []
    try:
        async def scenario() -> None:
            async with running(config, engine) as service:
                async with connect(service, "p2", "CP-1", "ocpp2.0.1", ssl_context=server_trust(ca),
                                   password=PASSWORD) as ws:
                    async with running_client(ws, "ocpp2.0.1", charger) as cp:
                        await cp.request_certificate()
                        await next_event(charger, "CertificateSigned")
                async with connect(service, "p3", "CP-1", "ocpp2.0.1",
                                   ssl_context=charger.tls(ca.root_pem, tmp_path / "c")) as ws:
                    async with running_client(ws, "ocpp2.0.1", charger):
                        await asyncio.sleep(0.2)
                assert service.charger_certs is not None
                report = await asyncio.to_thread(service.charger_certs.sweep_once)
                assert report is not None and report.crl_written is not None

        run(scenario())
        toml = tmp_path / "certd.toml"
        toml.write_text(f'state_dir = "{tmp_path / "state"}"\ndatabase_url = "{engine.url}"\n\n'
                        f'[ocpp.charger_ca]\norganization = "{ORG}"\nkey_storage = "store"\n'
                        f'key_encryption_key_env = "{KEK_ENV}"\n')
        for args in (["charger-ca", "show"], ["charger-ca", "export", "--crl", str(tmp_path / "x.crl")],
                     ["chargers", "certs"], ["chargers", "revoke-cert", "CP-1"], ["-vv", "chargers", "certs"]):
            assert certd_main(["--config", str(toml), *args]) == 0
        # Failures: a wrong KEK, a CA that exists, a readable import key: their messages too.
        monkeypatch.setenv(KEK_ENV, base64.b64encode(bytes(32)).decode())
        assert certd_main(["--config", str(toml), "charger-ca", "export", "--crl", str(tmp_path / "y.crl")]) != 0
        monkeypatch.setenv(KEK_ENV, KEK)
        assert certd_main(["--config", str(toml), "charger-ca", "init"]) != 0
        try:
            ca_store.create_ca(engine, config, utcnow())
        except CertdError as exc:
            errors.append(str(exc))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    output = capsys.readouterr()
    key_pem = keystore.key_pem(ca_store.load_issuing(engine, config).key)
    haystack = "\n".join(lines) + output.out + output.err + "\n".join(errors)
    assert len(lines) > 50 and "certificate_issued" in haystack  # the scan saw the whole story
    assert "PRIVATE KEY" not in haystack
    for secret in key_secrets(key_pem) + [KEK, bytes(range(32)).hex()]:
        assert secret not in haystack
    assert os.environ[KEK_ENV] not in haystack
