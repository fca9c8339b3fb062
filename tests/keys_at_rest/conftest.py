"""Keys, key files and keyed stores for the keys-at-rest tests (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from certd.config.store import StoreConfig
from certd.sandbox.certd_config import toml_str
from certd.store.db import make_engine, upgrade
from tests.pki import Leaf, MiniCA


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def write_key_file(path: Path, *keys: str, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(keys) + "\n")
    os.chmod(path, mode)
    return path


def raw_keys(engine: sa.Engine, table: str = "issued_certificate") -> list[str]:
    """The key_pem column as the database holds it (past the column type)."""
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(sa.text(f"SELECT key_pem FROM {table} ORDER BY id"))]


@dataclass
class Store:
    url: str
    tmp: Path

    def engine(self, key_file: Path | None = None, key_env: str | None = None) -> sa.Engine:
        store = StoreConfig(key_file=str(key_file) if key_file else None, key_env=key_env)
        return make_engine(self.url, store)

    def config_file(self, key_file: Path | None) -> Path:
        """A config for the `certd db` commands: the store and its key, nothing else."""
        path = self.tmp / "certd.toml"
        text = f"state_dir = {toml_str(self.tmp / 'state')}\ndatabase_url = {toml_str(self.url)}\n"
        if key_file is not None:
            text += f"\n[store]\nkey_file = {toml_str(key_file)}\n"
        else:
            text += "\n[store]\nkey_env = \"CERTD_TEST_NO_KEY\"\n"
        path.write_text(text)
        return path

    def cli(self, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "CERTD_STORE_KEY"}
        return subprocess.run([sys.executable, "-m", "certd", "--config", str(config), *args],
                              env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def store(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A migrated store on SQLite and on PostgreSQL; no key in the environment."""
    monkeypatch.delenv("CERTD_STORE_KEY", raising=False)
    upgrade(db_url)
    return Store(db_url, tmp_path)


@pytest.fixture(scope="session")
def leaf() -> Leaf:
    return MiniCA("keys at rest").issue(["keys.example.test"], "ec")
