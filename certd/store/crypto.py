"""The cipher for private keys at rest: AES-256-GCM under the store key(s).

Why AES-GCM rather than Fernet: both authenticate, but GCM takes associated
data, so each ciphertext is bound to its format version, key id and column
(a value copied into another column, or a header edited, fails to decrypt
instead of being accepted); it also needs no timestamp and a 256-bit key.
Nonces are 96 random bits per encryption: far below the 2^32 encryptions per
key where random nonces start to matter.

A stored value reads `certd-enc:v1:<key id>:<base64url(nonce || ciphertext+tag)>`;
anything else is a plaintext row (stored before a key was configured), so both
are told apart without a schema change. The key id is a hash of the key (it
names which key, never reveals it), so a keyring can hold the new and the old
key during a rotation. No message here ever contains a key or a plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from certd.config.store import StoreConfig
from certd.errors import ConfigError, SecretError
from certd.secrets import read_secret

PREFIX = "certd-enc:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_HELP = "a base64-encoded 32-byte key; make one with: openssl rand -base64 32"


class StoreKeyError(ConfigError):
    """The store key is missing, malformed or not the one a stored value was encrypted with."""


def is_encrypted(value: str) -> bool:
    return value.startswith(PREFIX)


def key_id(secret: bytes) -> str:
    """16 hex digits naming a key: a hash of it, so logs and errors can say which key is meant."""
    return hashlib.sha256(b"certd store key id\0" + secret).hexdigest()[:16]


@dataclass(frozen=True)
class StoreKey:
    secret: bytes = field(repr=False)

    @property
    def kid(self) -> str:
        return key_id(self.secret)


def parse_keys(text: str, setting: str) -> list[StoreKey]:
    """Keys separated by whitespace or commas, first one first; errors name `setting`, not the text."""
    keys: list[StoreKey] = []
    for position, token in enumerate(t for t in re.split(r"[\s,]+", text) if t):
        try:
            secret = base64.b64decode(token.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            secret = b""
        if len(secret) != KEY_BYTES:
            raise StoreKeyError(f"{setting}: key {position + 1} is not {KEY_HELP}")
        keys.append(StoreKey(secret))
    if not keys:
        raise StoreKeyError(f"{setting} holds no key: put {KEY_HELP}")
    return keys


class Keyring:
    """The configured keys: the first encrypts, every one decrypts what it encrypted."""

    def __init__(self, keys: Sequence[StoreKey], setting: str) -> None:
        if not keys:
            raise StoreKeyError(f"{setting}: no key given")
        self.setting = setting
        self._keys = list(keys)
        self._by_id = {key.kid: key for key in self._keys}

    def __repr__(self) -> str:
        return f"Keyring({self.setting}, key ids {', '.join(self.key_ids)})"

    @property
    def primary_id(self) -> str:
        return self._keys[0].kid

    @property
    def key_ids(self) -> list[str]:
        return [key.kid for key in self._keys]

    def encrypt(self, plaintext: str, purpose: str) -> str:
        key = self._keys[0]
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(key.secret).encrypt(nonce, plaintext.encode(), _aad(key.kid, purpose))
        return f"{PREFIX}{key.kid}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, purpose: str) -> str:
        """The plaintext of an encrypted value (a plaintext row is returned as it is)."""
        if not is_encrypted(stored):
            return stored
        kid, _, body = stored[len(PREFIX):].partition(":")
        key = self._by_id.get(kid)
        if key is None:
            raise StoreKeyError(
                f"{purpose} was encrypted with store key {kid}, which {self.setting} does not hold "
                f"(it holds {', '.join(self.key_ids)}): wrong key file or variable?")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            if len(raw) <= NONCE_BYTES:
                raise ValueError("too short")
            plain = AESGCM(key.secret).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(kid, purpose))
        except (InvalidTag, ValueError, binascii.Error):
            raise StoreKeyError(
                f"{purpose}: the stored value does not authenticate under store key {kid} "
                f"({self.setting}): the row was altered or copied from another column") from None
        return plain.decode()

    def is_current(self, stored: str) -> bool:
        """True when `stored` is encrypted under the key that encrypts now."""
        return stored.startswith(f"{PREFIX}{self.primary_id}:")


def _aad(kid: str, purpose: str) -> bytes:
    return f"{PREFIX}{kid}:{purpose}".encode()


def load_keyring(store: StoreConfig) -> Keyring | None:
    """The keyring `[store]` points at; None when no key is configured (file unset, variable empty)."""
    setting = store.key_setting()
    try:
        text = read_secret(env=store.key_env, file=store.key_file, what=setting, required=False)
    except SecretError as exc:
        raise StoreKeyError(str(exc)) from None
    if text is None:
        return None
    return Keyring(parse_keys(text, setting), setting)
