"""What an engine does with a private key it is given to store: encrypt, refuse, or warn.

Each engine (`certd.store.db.make_engine`) registers its `SealingPolicy`: the
keyring from `[store]`, the backend and, for SQLite, the file. The column type
(`certd.store.types.EncryptedText`) finds the policy through the dialect the
statement runs on (one dialect object per engine), so two engines in one
process (tests, `certd db rotate-key`) never share a key by accident.

- a key is configured: every private key written is encrypted;
- no key, PostgreSQL (or any server database): refused, a ConfigError naming
  the setting (a shared database is the copy of the keys most worth taking);
- no key, SQLite: stored in plain text (the single-host default keeps working)
  if the file is owner-only, with a warning once per engine; refused when
  group or others can read it.
"""

from __future__ import annotations

import logging
import os
import stat
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from certd.store.crypto import Keyring, StoreKeyError, is_encrypted

log = logging.getLogger("certd.store")

HOW_TO_SET = ("set [store] key_file (an owner-only file) or the environment variable named by "
              "[store] key_env (default CERTD_STORE_KEY) to a base64-encoded 32-byte key "
              "(openssl rand -base64 32)")


@dataclass
class SealingPolicy:
    keyring: Keyring | None
    backend: str
    sqlite_path: Path | None = None
    setting: str = "[store] key_file / key_env"
    _warned: bool = field(default=False, repr=False)

    def check_can_store(self) -> None:
        """Raise StoreKeyError now if a private key given to this store would be refused."""
        if self.keyring is not None:
            return
        if self.backend != "sqlite":
            backend = {"postgresql": "PostgreSQL"}.get(self.backend, self.backend)
            raise StoreKeyError(
                f"refusing to store private keys unencrypted in {backend}: no store key is "
                f"configured ({self.setting}); {HOW_TO_SET}")
        if self.sqlite_path is not None:
            try:
                mode = stat.S_IMODE(os.stat(self.sqlite_path).st_mode)
            except FileNotFoundError:
                return  # created 0600 by make_engine before SQLite opens it
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise StoreKeyError(
                    f"refusing to store private keys unencrypted in {self.sqlite_path}, which group "
                    f"or others can read (mode {mode:04o}): run chmod 600 {self.sqlite_path}, "
                    f"or {HOW_TO_SET}")

    def seal(self, plaintext: str, purpose: str) -> str:
        if self.keyring is not None:
            return self.keyring.encrypt(plaintext, purpose)
        self.check_can_store()
        if not self._warned:
            self._warned = True
            where = self.sqlite_path or "the SQLite database"
            log.warning("private keys are stored unencrypted in %s (owner-only); to encrypt them, %s",
                        where, HOW_TO_SET)
        return plaintext

    def open(self, stored: str, purpose: str) -> str:
        if not is_encrypted(stored):
            if self.keyring is not None and not self._warned:
                self._warned = True
                log.warning("private keys stored before a store key was configured are still "
                            "unencrypted (%s): run `certd db encrypt`", purpose)
            return stored
        if self.keyring is None:
            raise StoreKeyError(
                f"{purpose} is encrypted in the store but no store key is configured "
                f"({self.setting}); {HOW_TO_SET}")
        return self.keyring.decrypt(stored, purpose)


_POLICIES: "weakref.WeakKeyDictionary[sa.Dialect, SealingPolicy]" = weakref.WeakKeyDictionary()


def register(engine: sa.Engine, keyring: Keyring | None, setting: str) -> SealingPolicy:
    url = engine.url
    backend = url.get_backend_name()
    path = None
    if backend == "sqlite" and url.database and url.database != ":memory:" \
            and not url.database.startswith("file:"):
        path = Path(url.database)
    policy = SealingPolicy(keyring, backend, path, setting)
    _POLICIES[engine.dialect] = policy
    return policy


def policy_for(dialect: sa.Dialect) -> SealingPolicy:
    """The policy of the engine `dialect` belongs to (an engine made elsewhere: no key)."""
    policy = _POLICIES.get(dialect)
    if policy is None:
        policy = SealingPolicy(None, dialect.name)
        _POLICIES[dialect] = policy
    return policy


def policy_of(engine: sa.Engine) -> SealingPolicy:
    return policy_for(engine.dialect)
