"""Where the charger CA's private key lives, and how it is kept from being read.

Two ways, chosen by `[ocpp.charger_ca] key_storage`:

- "file": a PEM file created owner-only (0600, its directory 0700); certd refuses to read
  it once group or others may (like every secret file, see certd.secrets);
- "store": AES-256-GCM in the store (`charger_ca_cert.key_sealed`), the CA certificate's
  fingerprint bound in as associated data, so a sealed key cannot be swapped onto another
  CA row. Under the **store key** (`[store] key_file` / `key_env`, certd.store.crypto's
  format `certd-enc:v1:<key id>:...`) when no key-encryption key of its own is set, so
  `certd db rotate-key` and `certd db encrypt` carry it along with every other private key;
  or, with `key_encryption_key_env` / `key_encryption_key_file`, under that 32-byte key
  (nonce + ciphertext; `rotate-key --new-charger-ca-kek-*` re-seals it). Which one a row is
  under is read from the row, so a row sealed either way stays readable. No KEK ever
  enters the store.

No message here ever carries key material: errors name the file or the setting only.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from certd.config.charger_ca import ChargerCaConfig
from certd.errors import CertdError, SecretError
from certd.secrets import read_secret, read_secret_file
from certd.store.crypto import PREFIX, Keyring

NONCE_BYTES = 12
KEK_BYTES = 32
NO_KEY = ("key_storage = \"store\" seals the charger CA key under the store key ([store] key_file / "
          "key_env) unless [ocpp.charger_ca] key_encryption_key_env or key_encryption_key_file is set, "
          "and neither is configured")


class CaKeyError(CertdError):
    """The CA key is missing, unreadable or does not decrypt (never carries key material)."""


def has_own_kek(settings: ChargerCaConfig | None) -> bool:
    return settings is not None and bool(settings.key_encryption_key_env or settings.key_encryption_key_file)


def kek_setting(settings: ChargerCaConfig) -> str:
    """The setting that names the KEK, for errors (never its value)."""
    if settings.key_encryption_key_file:
        return f"[ocpp.charger_ca] key_encryption_key_file ({settings.key_encryption_key_file})"
    return f"[ocpp.charger_ca] key_encryption_key_env (environment variable {settings.key_encryption_key_env})"


def read_kek(*, env: str | None, file: str | None, what: str) -> bytes:
    """A 32-byte KEK, base64 in an env var or an owner-only file; errors name `what`."""
    text = read_secret(env=env, file=file, what=what)
    assert text is not None
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"{what}: not base64 (make one with: head -c 32 /dev/urandom | base64)") from None
    if len(raw) != KEK_BYTES:
        raise SecretError(f"{what}: {len(raw)} bytes after base64 decoding, {KEK_BYTES} needed")
    return raw


def key_encryption_key(settings: ChargerCaConfig) -> bytes:
    """The 32-byte KEK from the configured env var or owner-only file."""
    return read_kek(env=settings.key_encryption_key_env, file=settings.key_encryption_key_file,
                    what=f"charger CA key-encryption key ({kek_setting(settings)})")


def seal(key_pem: bytes, kek: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, key_pem, associated)


def unseal(sealed: bytes, kek: bytes, associated: bytes, setting: str = "the configured key-encryption key") -> bytes:
    try:
        return AESGCM(kek).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise CaKeyError(f"the charger CA key in the store does not decrypt with {setting} "
                         "(wrong key, or the row was altered)") from None


# -- sealed under the store key, or under a KEK of its own: chosen by the config, read by the row --

def purpose(fingerprint: str) -> str:
    """The associated data of a CA key under the store key: its column and its CA certificate."""
    return f"charger_ca_cert.key_sealed {fingerprint}"


def under_store_key(sealed: bytes) -> bool:
    return sealed.startswith(PREFIX.encode())


def seal_ca_key(key_pem: bytes, fingerprint: str, settings: ChargerCaConfig, store_keys: Keyring | None) -> bytes:
    """Seal a new CA key: under its own KEK if one is configured, else under the store key."""
    if has_own_kek(settings):
        return seal(key_pem, key_encryption_key(settings), fingerprint.encode())
    if store_keys is None:
        raise CaKeyError(NO_KEY)
    return store_keys.encrypt(key_pem.decode("ascii"), purpose(fingerprint)).encode("ascii")


def unseal_ca_key(sealed: bytes, fingerprint: str, settings: ChargerCaConfig | None,
                  store_keys: Keyring | None) -> bytes:
    """The PEM of a sealed CA key, with the key its row says it is under."""
    if under_store_key(sealed):
        if store_keys is None:
            raise CaKeyError("the charger CA key in the store is encrypted under the store key, but no "
                             "store key is configured ([store] key_file / key_env)")
        return store_keys.decrypt(sealed.decode("ascii"), purpose(fingerprint)).encode("ascii")
    if settings is None or not has_own_kek(settings):
        raise CaKeyError("the charger CA key in the store is sealed under a key-encryption key of its own: "
                         "set [ocpp.charger_ca] key_encryption_key_env or key_encryption_key_file")
    return unseal(sealed, key_encryption_key(settings), fingerprint.encode(), kek_setting(settings))


def key_path(settings: ChargerCaConfig, state_dir: str, ca_fingerprint: str) -> Path:
    """Where a CA key of key_storage = "file" is written: one file per CA certificate."""
    directory = Path(settings.key_dir) if settings.key_dir else Path(state_dir) / "charger-ca"
    return directory / f"ca-{ca_fingerprint[:16]}.key"


def write_key_file(path: Path, key_pem: bytes) -> None:
    """Create `path` owner-only with the key (refuses to overwrite an existing key file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        raise CaKeyError(f"{path} exists already; certd does not overwrite a CA key")
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, path)  # fails if another process created the key meanwhile
    except FileExistsError:
        raise CaKeyError(f"{path} exists already; certd does not overwrite a CA key") from None
    finally:
        temp.unlink(missing_ok=True)


def read_key_file(path: str | os.PathLike[str], what: str = "charger CA key") -> bytes:
    """The key file's PEM, refused when group or others may read it."""
    return read_secret_file(path, what).encode("ascii", errors="replace") + b"\n"


def load_key(pem: bytes, where: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CaKeyError(f"{where}: not an unencrypted PEM private key") from None


def key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
