"""Where the charger CA's private key lives, and how it is kept from being read.

Two ways, chosen by `[ocpp.charger_ca] key_storage`:

- "file": a PEM file created owner-only (0600, its directory 0700); certd refuses to read
  it once group or others may (like every secret file, see certd.secrets);
- "store": AES-256-GCM in the store (`charger_ca_cert.key_sealed` = 12-byte nonce +
  ciphertext, the CA certificate's fingerprint as associated data, so a sealed key
  cannot be swapped onto another CA row), under a 32-byte key-encryption key read
  from an environment variable or an owner-only file, base64-encoded
  (`head -c 32 /dev/urandom | base64`). The KEK never enters the store.

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

NONCE_BYTES = 12
KEK_BYTES = 32


class CaKeyError(CertdError):
    """The CA key is missing, unreadable or does not decrypt (never carries key material)."""


def key_encryption_key(settings: ChargerCaConfig) -> bytes:
    """The 32-byte KEK from the configured env var or owner-only file."""
    what = "charger CA key-encryption key"
    text = read_secret(env=settings.key_encryption_key_env, file=settings.key_encryption_key_file,
                       what=what)
    assert text is not None
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"{what}: not base64 (make one with: head -c 32 /dev/urandom | base64)") from None
    if len(raw) != KEK_BYTES:
        raise SecretError(f"{what}: {len(raw)} bytes after base64 decoding, {KEK_BYTES} needed")
    return raw


def seal(key_pem: bytes, kek: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, key_pem, associated)


def unseal(sealed: bytes, kek: bytes, associated: bytes) -> bytes:
    try:
        return AESGCM(kek).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise CaKeyError("the charger CA key in the store does not decrypt with the configured "
                         "key-encryption key (wrong key, or the row was altered)") from None


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
