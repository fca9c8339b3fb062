"""`certd issue` against Pebble on PostgreSQL: with a key file the account key and the
certificate key are stored encrypted and deployed in the clear; without a key the command
stops before any order, naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certd.sandbox.certd_config import toml_str
from certd.store.crypto import PREFIX
from tests.keys_at_rest.conftest import new_key, raw_keys, write_key_file
from tests.obtain.conftest import cert_toml, make_setup  # noqa: F401  (fixture)


def _count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_issue_on_postgresql_stores_keys_encrypted(make_setup, pg_url: str, tmp_path: Path,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERTD_STORE_KEY")
    key = new_key()
    key_file = write_key_file(tmp_path / "store.key", key)
    certificates = cert_toml("web", ["local.example.com"], target_dir=tmp_path / "ssl")
    setup = make_setup(certificates + f"\n[store]\nkey_file = {toml_str(key_file)}\n", db_url=pg_url)

    result = setup.cli("issue", "web")
    assert result.returncode == 0, result.stderr
    assert key not in result.stdout + result.stderr

    for table in ("acme_account", "issued_certificate"):
        (stored,) = raw_keys(setup.engine, table)
        assert stored.startswith(PREFIX) and "PRIVATE KEY" not in stored
    deployed_key = serialization.load_pem_private_key((tmp_path / "ssl" / "privkey.pem").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((tmp_path / "ssl" / "cert.pem").read_bytes())
    assert deployed_key.public_key().public_numbers() == cert.public_key().public_numbers()

    status = setup.cli("status")
    assert status.returncode == 0, status.stderr


def test_issue_on_postgresql_without_a_key_is_refused_before_any_order(
        make_setup, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.delenv("CERTD_STORE_KEY")
    setup = make_setup(cert_toml("web", ["local.example.com"]), db_url=pg_url)

    result = setup.cli("issue", "web")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "[store] key_file" in result.stderr and "CERTD_STORE_KEY" in result.stderr
    assert "PostgreSQL" in result.stderr
    # Refused before the account exists, so no order reached the CA and no key was stored.
    assert _count(setup.engine, "acme_account") == 0
    assert _count(setup.engine, "issued_certificate") == 0
