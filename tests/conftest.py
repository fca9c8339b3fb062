"""Shared fixtures: the offline sandbox world, Pebble, and real databases.

Tests use real parts (docs/architecture.md). When a part is missing locally
(no Pebble binary, no PostgreSQL) its tests are skipped, but in CI (CI=true)
they fail: a green CI run must mean every part really ran.

Fixtures
- cf_world: Cloudflare emulator + DNS server with zones example.com and
  example.net and a full-access token (`.emulator`, `.dns_addr`, `.token`,
  `.base_url`, `.zone_ids`, `.store`, `.dns`).
- pebble: a PebbleServer validating DNS-01 against cf_world's DNS server.
- pg_url: a fresh PostgreSQL database (dropped afterwards), as a SQLAlchemy URL; sets
  CERTD_STORE_KEY to a fresh key (certd refuses to store private keys in PostgreSQL
  unencrypted, see certd.store.sealing).
- db_url: parametrized over "sqlite" (temp file) and "postgresql" (pg_url).

Add feature-specific fixtures in a conftest.py inside your own test folder.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from certd.sandbox import PebbleNotFoundError, PebbleServer, SandboxWorld, find_pebble

PG_ADMIN_DSN = os.environ.get("CERTD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_part(reason: str) -> None:
    """Skip locally, fail in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: missing parts fail instead of skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def cf_world() -> Iterator[SandboxWorld]:
    with SandboxWorld() as world:
        yield world


@pytest.fixture
def pebble(cf_world: SandboxWorld) -> Iterator[PebbleServer]:
    try:
        find_pebble()
    except PebbleNotFoundError as exc:
        missing_part(str(exc))
    with PebbleServer(cf_world.dns_addr) as server:
        yield server


@pytest.fixture
def pg_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    import base64

    import psycopg
    from psycopg import sql

    monkeypatch.setenv("CERTD_STORE_KEY", base64.b64encode(os.urandom(32)).decode())

    name = f"certd_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        missing_part(f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    host, port, user = info.get("host", "127.0.0.1"), info.get("port", "5432"), info.get("user", "postgres")
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'certd.db'}"
    return str(request.getfixturevalue("pg_url"))
