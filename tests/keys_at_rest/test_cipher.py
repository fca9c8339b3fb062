"""The cipher and the keyring on their own: formats, authentication, key parsing, messages."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from certd.config.store import StoreConfig
from certd.store.crypto import PREFIX, Keyring, StoreKeyError, load_keyring, parse_keys
from tests.keys_at_rest.conftest import new_key, write_key_file

PEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"


def keyring(*keys: str) -> Keyring:
    return Keyring(parse_keys(" ".join(keys), "test keys"), "test keys")


def test_ciphertext_is_versioned_and_hides_the_plaintext() -> None:
    ring = keyring(new_key())
    first = ring.encrypt(PEM, "issued_certificate.key_pem")
    second = ring.encrypt(PEM, "issued_certificate.key_pem")
    assert first.startswith(f"{PREFIX}{ring.primary_id}:")
    assert first != second  # a fresh nonce each time
    assert "PRIVATE KEY" not in first and "MIGHAgEA" not in first
    assert ring.decrypt(first, "issued_certificate.key_pem") == PEM
    assert ring.decrypt(PEM, "issued_certificate.key_pem") == PEM  # a plaintext row reads as it is


def test_a_value_moved_to_another_column_or_altered_does_not_decrypt() -> None:
    ring = keyring(new_key())
    sealed = ring.encrypt(PEM, "issued_certificate.key_pem")
    with pytest.raises(StoreKeyError, match="does not authenticate"):
        ring.decrypt(sealed, "acme_account.key_pem")
    head, body = sealed.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(StoreKeyError, match="does not authenticate"):
        ring.decrypt(f"{head}:{base64.urlsafe_b64encode(bytes(raw)).decode()}",
                     "issued_certificate.key_pem")


def test_old_keys_decrypt_first_key_encrypts() -> None:
    old, new = new_key(), new_key()
    sealed_old = keyring(old).encrypt(PEM, "p")
    both = keyring(new, old)
    assert both.decrypt(sealed_old, "p") == PEM
    assert not both.is_current(sealed_old)
    assert both.is_current(both.encrypt(PEM, "p"))
    with pytest.raises(StoreKeyError, match="does not hold") as caught:
        keyring(new).decrypt(sealed_old, "p")
    assert old not in str(caught.value) and new not in str(caught.value)


@pytest.mark.parametrize("text", ["not base64 at all!", base64.b64encode(b"short").decode(), ""])
def test_malformed_keys_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(StoreKeyError) as caught:
        parse_keys(text, "[store] key_file (/etc/certd/store.key)")
    message = str(caught.value)
    assert "[store] key_file (/etc/certd/store.key)" in message and "openssl rand -base64 32" in message
    if text:
        assert text not in message


def test_key_file_must_be_owner_only(tmp_path: Path) -> None:
    key = new_key()
    path = write_key_file(tmp_path / "store.key", key, mode=0o644)
    with pytest.raises(StoreKeyError, match="chmod 600") as caught:
        load_keyring(StoreConfig(key_file=str(path)))
    assert "[store] key_file" in str(caught.value) and key not in str(caught.value)
    path.chmod(0o600)
    ring = load_keyring(StoreConfig(key_file=str(path)))
    assert ring is not None and key not in repr(ring)


def test_key_from_environment_and_none_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERTD_STORE_KEY", raising=False)
    assert load_keyring(StoreConfig()) is None
    monkeypatch.setenv("CERTD_STORE_KEY", new_key())
    ring = load_keyring(StoreConfig())
    assert ring is not None and "CERTD_STORE_KEY" in ring.setting
    monkeypatch.setenv("CERTD_STORE_KEY", "garbage")
    with pytest.raises(StoreKeyError, match="environment variable CERTD_STORE_KEY"):
        load_keyring(StoreConfig())


def test_store_key_variable_never_reaches_hooks() -> None:
    from certd.config import parse_config

    config = parse_config('[store]\nkey_env = "MY_STORE_KEY"\n')
    assert "MY_STORE_KEY" in config.secret_env_names()
    assert "CERTD_STORE_KEY" in parse_config("").secret_env_names()
