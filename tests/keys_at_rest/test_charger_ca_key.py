"""The charger CA's key in the store goes through `certd db rotate-key` with every other private key,
on SQLite and on PostgreSQL: under the store key (no key-encryption key of its own) it is
re-encrypted under the new store key; under a KEK of its own it is re-sealed under
`--new-charger-ca-kek-*`. Either way in the same transaction as the other keys: after the
rotation the CA signs a charger certificate with the new key, the old key is a clear error
naming the setting, and a wrong current key changes nothing at all."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certd.chargerca import ca_store, keystore, records
from certd.config import Config, load_config
from certd.sandbox.certd_config import toml_str
from certd.store.crypto import PREFIX, StoreKeyError, key_id
from certd.store.types import utcnow
from tests.keys_at_rest.conftest import Store, new_key, raw_keys, write_key_file
from tests.pki import Leaf, store_current

KEK_ENV = "CERTD_TEST_CHARGER_CA_KEK"


def ca_config(store: Store, key_file: Path, *, own_kek: bool = False) -> Path:
    path = store.tmp / "certd.toml"
    text = (f"state_dir = {toml_str(store.tmp / 'state')}\ndatabase_url = {toml_str(store.url)}\n\n"
            f"[store]\nkey_file = {toml_str(key_file)}\n\n"
            '[ocpp.charger_ca]\norganization = "Example Charging GmbH"\nkey_storage = "store"\n')
    if own_kek:
        text += f'key_encryption_key_env = "{KEK_ENV}"\n'
    path.write_text(text)
    return path


def kid(key_file: Path) -> str:
    return key_id(base64.b64decode(key_file.read_text().strip()))


def sealed_ca_key(engine: sa.Engine) -> bytes:
    """charger_ca_cert.key_sealed as the database holds it."""
    with engine.connect() as conn:
        (value,) = conn.execute(sa.text("SELECT key_sealed FROM charger_ca_cert WHERE key_sealed IS NOT NULL")).one()
    return bytes(value)


def sign(engine: sa.Engine, config: Config, charger_id: str) -> x509.Certificate:
    """A charger certificate signed by the active CA (its key decrypted from the store)."""
    ca = ca_store.load_issuing(engine, config)
    charger_key = ec.generate_private_key(ec.SECP256R1())
    assert config.ocpp.charger_ca is not None
    issued = records.issue(engine, ca, charger_id, charger_key.public_key(), "ec-p256", config.ocpp.charger_ca,
                           utcnow())
    cert = x509.load_pem_x509_certificates(issued.chain_pem.encode())[0]
    cert.verify_directly_issued_by(ca.cert)
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == charger_id
    return cert


def test_the_ca_key_under_the_store_key_is_rotated_with_the_other_keys(store: Store, leaf: Leaf,
                                                                       tmp_path: Path) -> None:
    old_text, new_text = new_key(), new_key()
    old = write_key_file(tmp_path / "old.key", old_text)
    new = write_key_file(tmp_path / "new.key", new_text)
    config_path = ca_config(store, old)
    config = load_config(config_path)
    ca = ca_store.ensure_ca(store.engine(old), config, utcnow())
    store_current(store.engine(old), "web", leaf)
    assert sealed_ca_key(store.engine(old)).startswith(f"{PREFIX}{kid(old)}:".encode())
    sign(store.engine(old), config, "CP-BEFORE")

    result = store.cli(config_path, "db", "rotate-key", "--new-key-file", str(new))
    assert result.returncode == 0, result.stderr
    assert "charger_ca_cert.key_sealed: 1 re-encrypted, 0 already under the key" in result.stdout
    assert "issued_certificate.key_pem: 1 re-encrypted" in result.stdout
    assert sealed_ca_key(store.engine(new)).startswith(f"{PREFIX}{kid(new)}:".encode())
    assert all(value.startswith(f"{PREFIX}{kid(new)}:") for value in raw_keys(store.engine(new)))

    signed = sign(store.engine(new), config, "CP-AFTER")
    assert signed.issuer == x509.load_pem_x509_certificate(ca.cert_pem.encode()).subject
    with pytest.raises(StoreKeyError) as refused:
        ca_store.load_issuing(store.engine(old), config)
    message = str(refused.value)
    assert f"[store] key_file ({old})" in message and kid(new) in message and "charger_ca_cert.key_sealed" in message
    assert old_text not in message and new_text not in message and "PRIVATE" not in message
    again = store.cli(ca_config(store, new), "db", "rotate-key", "--new-key-file", str(new))
    assert "charger_ca_cert.key_sealed: 0 re-encrypted, 1 already under the key" in again.stdout


def test_a_ca_key_with_its_own_kek_is_resealed_in_the_same_transaction(
        store: Store, leaf: Leaf, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store_key = write_key_file(tmp_path / "store.key", new_key())
    new_store_key = write_key_file(tmp_path / "store-new.key", new_key())
    kek_a, kek_b, wrong = new_key(), new_key(), new_key()
    kek_b_file = write_key_file(tmp_path / "kek-b", kek_b)
    config_path = ca_config(store, store_key, own_kek=True)
    config = load_config(config_path)
    monkeypatch.setenv(KEK_ENV, kek_a)
    ca_store.ensure_ca(store.engine(store_key), config, utcnow())
    store_current(store.engine(store_key), "web", leaf)
    sealed, issued_keys = sealed_ca_key(store.engine(store_key)), raw_keys(store.engine(store_key))
    assert not keystore.under_store_key(sealed)

    # The current KEK is wrong: refused, naming the setting, and not one row of any table written.
    monkeypatch.setenv(KEK_ENV, wrong)
    failed = store.cli(config_path, "db", "rotate-key", "--new-key-file", str(new_store_key),
                       "--new-charger-ca-kek-file", str(kek_b_file))
    assert failed.returncode != 0
    assert f"key_encryption_key_env (environment variable {KEK_ENV})" in failed.stderr
    assert not {wrong, kek_a, kek_b} & {*failed.stderr.split(), *failed.stdout.split()}
    assert sealed_ca_key(store.engine(store_key)) == sealed and raw_keys(store.engine(store_key)) == issued_keys

    # Only the store key: the CA key stays under its own KEK, and says so.
    monkeypatch.setenv(KEK_ENV, kek_a)
    kept = store.cli(config_path, "db", "rotate-key", "--new-key-file", str(new_store_key))
    assert kept.returncode == 0, kept.stderr
    assert "charger_ca_cert.key_sealed: 1 under the charger CA's own key-encryption key, not changed" in kept.stdout
    assert sealed_ca_key(store.engine(new_store_key)) == sealed

    # Both at once: the other keys under the newer store key, the CA key under KEK B.
    newest = write_key_file(tmp_path / "store-newest.key", new_key())
    both = store.cli(ca_config(store, new_store_key, own_kek=True), "db", "rotate-key", "--new-key-file",
                     str(newest), "--new-charger-ca-kek-file", str(kek_b_file))
    assert both.returncode == 0, both.stderr
    assert "charger_ca_cert.key_sealed: 1 re-sealed under the new charger CA key-encryption key" in both.stdout
    assert "issued_certificate.key_pem: 1 re-encrypted" in both.stdout
    assert sealed_ca_key(store.engine(newest)) != sealed

    monkeypatch.setenv(KEK_ENV, kek_b)
    sign(store.engine(newest), config, "CP-AFTER")
    monkeypatch.setenv(KEK_ENV, kek_a)
    with pytest.raises(keystore.CaKeyError) as refused:
        ca_store.load_issuing(store.engine(newest), config)
    assert f"key_encryption_key_env (environment variable {KEK_ENV})" in str(refused.value)
    assert kek_a not in str(refused.value) and kek_b not in str(refused.value)


def test_no_store_key_and_no_kek_of_its_own_is_refused_before_a_ca_is_made(store: Store, tmp_path: Path) -> None:
    config = load_config(ca_config(store, write_key_file(tmp_path / "k", new_key())))
    with pytest.raises(keystore.CaKeyError) as refused:
        ca_store.ensure_ca(store.engine(key_env="CERTD_TEST_NO_KEY"), config, utcnow())
    assert "[store] key_file" in str(refused.value) and "key_encryption_key_file" in str(refused.value)
    assert ca_store.ca_rows(store.engine(key_env="CERTD_TEST_NO_KEY")) == []
