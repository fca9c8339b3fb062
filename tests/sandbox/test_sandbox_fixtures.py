"""The shared fixtures in tests/conftest.py: databases, and fail-not-skip in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy

from certd.sandbox import SandboxWorld

ROOT = Path(__file__).resolve().parents[2]
ADMIN_DSN = os.environ.get("CERTD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def database_exists(name: str) -> bool:
    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


@pytest.fixture
def dropped_afterwards() -> Iterator[list[str]]:
    """Set up before pg_url, so torn down after it: checks the database is gone by then."""
    names: list[str] = []
    yield names
    for name in names:
        assert not database_exists(name), f"pg_url left database {name} behind"


def test_pg_url_is_a_fresh_database_dropped_afterwards(dropped_afterwards: list[str], pg_url: str) -> None:
    assert pg_url.startswith("postgresql+psycopg://postgres@127.0.0.1:5432/certd_test_")
    engine = sqlalchemy.create_engine(pg_url)
    with engine.connect() as conn:
        name = conn.execute(sqlalchemy.text("SELECT current_database()")).scalar_one()
        tables = conn.execute(sqlalchemy.text(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")).scalar_one()
    engine.dispose()  # an open pool must not stop the drop either way
    assert tables == 0
    assert database_exists(name)
    dropped_afterwards.append(name)


def test_db_url_gives_a_working_database(db_url: str) -> None:
    engine = sqlalchemy.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE probe (id INTEGER PRIMARY KEY, note TEXT)"))
        conn.execute(sqlalchemy.text("INSERT INTO probe (id, note) VALUES (1, 'ok')"))
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT note FROM probe")).scalar_one() == "ok"
    assert engine.dialect.name in ("sqlite", "postgresql")


def test_cf_world_shape(cf_world: SandboxWorld) -> None:
    assert set(cf_world.zone_ids) == {"example.com", "example.net"}
    assert cf_world.dns_addr == f"127.0.0.1:{cf_world.dns_port}"
    assert cf_world.base_url.endswith("/client/v4")
    assert len(cf_world.token) == 40


def start_pytest(env_changes: dict[str, str]) -> subprocess.Popen[str]:
    """Start a child pytest running two fixture-dependent tests with missing Pebble and PostgreSQL."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env.update(env_changes)
    tests = ["tests/sandbox/test_sandbox_pebble.py::test_roots_and_intermediates",
             "tests/sandbox/test_sandbox_fixtures.py::test_pg_url_is_a_fresh_database_dropped_afterwards"]
    return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.skipif(os.environ.get("CERTD_FIXTURE_SELFTEST") == "1", reason="already inside the self-test")
def test_missing_parts_skip_locally_but_fail_in_ci() -> None:
    missing = {"PEBBLE_BIN": "/nonexistent/pebble", "CERTD_TEST_PG_DSN": "postgresql://postgres@127.0.0.1:1/x",
               "CERTD_FIXTURE_SELFTEST": "1"}
    local, ci = start_pytest(missing), start_pytest({**missing, "CI": "true"})  # in parallel: saves seconds
    local_out, _ = local.communicate(timeout=120)
    ci_out, _ = ci.communicate(timeout=120)
    assert local.returncode == 0, local_out
    assert "2 skipped" in local_out, local_out
    assert ci.returncode == 1, ci_out
    assert "2 errors" in ci_out, ci_out
    assert "CI=true" in ci_out, ci_out
