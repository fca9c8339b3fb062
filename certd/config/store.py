"""The `[store]` section: the key that encrypts private keys kept in the database.

The database URL stays the top-level `database_url`. The key never sits in the
config: it comes from an owner-only file (`key_file`) or an environment variable
(`key_env`, by default CERTD_STORE_KEY), as one or more base64-encoded 32-byte
keys (`openssl rand -base64 32`): the first encrypts, the others still decrypt
(a rotation in progress). See certd.store.crypto.
"""

from __future__ import annotations

import re

from pydantic import field_validator

from certd.config._base import Section

DEFAULT_KEY_ENV = "CERTD_STORE_KEY"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StoreConfig(Section):
    # Owner-only file (mode 0600) with the store key(s); wins over key_env when set.
    key_file: str | None = None
    # Environment variable with the store key(s) when key_file is unset.
    key_env: str | None = DEFAULT_KEY_ENV

    @field_validator("key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("key_file")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a path, or left out")
        return value

    def key_setting(self) -> str:
        """Where the key is looked for, as an operator would name it in an error."""
        if self.key_file:
            return f"[store] key_file ({self.key_file})"
        if self.key_env:
            return f"[store] key_env (environment variable {self.key_env})"
        return "[store] key_file or key_env (neither is set)"
