"""Private keys through a real store, on SQLite and on PostgreSQL: what the database holds,
what a wrong or missing key does, rotation, the migration of existing rows, and that no key
reaches a log or an error."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from certd.config.store import StoreConfig
from certd.store.crypto import PREFIX, StoreKeyError
from certd.store.db import MIGRATIONS_DIR, make_engine, script_heads, session_scope, upgrade
from certd.store.models import AcmeAccount, IssuedCertificate
from certd.store.rekey import count_plaintext, reseal, sealed_columns
from certd.store.sealing import policy_of
from tests.keys_at_rest.conftest import Store, new_key, raw_keys, write_key_file
from tests.pki import Leaf, store_current


def pem_body(pem: str) -> str:
    return pem.splitlines()[1]


def read_key(engine: sa.Engine, issued_id: int) -> str:
    with session_scope(engine) as session:
        row = session.get(IssuedCertificate, issued_id)
        assert row is not None
        return row.key_pem


def test_stored_bytes_are_not_the_pem_and_read_back(store: Store, leaf: Leaf, tmp_path: Path) -> None:
    engine = store.engine(write_key_file(tmp_path / "store.key", new_key()))
    issued_id = store_current(engine, "web", leaf)
    with session_scope(engine) as session:
        session.add(AcmeAccount(directory_url="https://ca.test/dir", key_pem=leaf.key_pem))
    for table in ("issued_certificate", "acme_account"):
        (stored,) = raw_keys(engine, table)
        assert stored.startswith(PREFIX)
        assert "PRIVATE KEY" not in stored and pem_body(leaf.key_pem) not in stored
    assert read_key(engine, issued_id) == leaf.key_pem
    with session_scope(engine) as session:
        account = session.exec(sa.select(AcmeAccount)).scalars().one()
        assert account.key_pem == leaf.key_pem


def test_wrong_key_is_a_clear_error_and_changes_nothing(store: Store, leaf: Leaf, tmp_path: Path) -> None:
    right = write_key_file(tmp_path / "right.key", new_key())
    wrong_key = new_key()
    wrong = write_key_file(tmp_path / "wrong.key", wrong_key)
    issued_id = store_current(store.engine(right), "web", leaf)
    before = raw_keys(store.engine(right))

    with pytest.raises(StoreKeyError) as caught:
        read_key(store.engine(wrong), issued_id)
    assert f"[store] key_file ({wrong})" in str(caught.value)
    assert wrong_key not in str(caught.value) and pem_body(leaf.key_pem) not in str(caught.value)
    with pytest.raises(StoreKeyError, match="no store key is configured"):
        read_key(store.engine(key_env="CERTD_TEST_NO_KEY"), issued_id)

    # `certd db encrypt` and `rotate-key` with the wrong key: refused, not one row written.
    config = store.config_file(wrong)
    third = write_key_file(tmp_path / "third.key", new_key())
    for args in (("db", "encrypt"), ("db", "rotate-key", "--new-key-file", str(third))):
        result = store.cli(config, *args)
        assert result.returncode == 2, result.stderr
        assert "[store] key_file" in result.stderr and wrong_key not in result.stderr + result.stdout
    assert raw_keys(store.engine(right)) == before
    assert read_key(store.engine(right), issued_id) == leaf.key_pem


def test_postgresql_refuses_private_keys_without_a_store_key(pg_url: str, leaf: Leaf,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERTD_STORE_KEY")
    upgrade(pg_url)
    engine = make_engine(pg_url)
    with pytest.raises(StoreKeyError) as caught:
        policy_of(engine).check_can_store()
    assert "PostgreSQL" in str(caught.value) and "[store] key_file" in str(caught.value)
    with pytest.raises(StoreKeyError, match="refusing to store private keys unencrypted in PostgreSQL"):
        store_current(engine, "web", leaf)
    assert raw_keys(engine) == []


def test_sqlite_without_key_stores_plaintext_owner_only_with_a_warning(
        tmp_path: Path, leaf: Leaf, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("CERTD_STORE_KEY", raising=False)
    path = tmp_path / "certd.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    assert (path.stat().st_mode & 0o777) == 0o600
    with caplog.at_level(logging.WARNING, logger="certd.store"):
        store_current(make_engine(url), "web", leaf)
    assert raw_keys(make_engine(url)) == [leaf.key_pem]
    assert any("stored unencrypted" in r.getMessage() and "[store] key_file" in r.getMessage()
               for r in caplog.records)
    path.chmod(0o644)
    with pytest.raises(StoreKeyError, match="chmod 600"):
        store_current(make_engine(url), "web", leaf)
    assert len(raw_keys(make_engine(url))) == 1


def test_rotate_key_reencrypts_everything_under_the_new_key(store: Store, leaf: Leaf,
                                                            tmp_path: Path) -> None:
    old = write_key_file(tmp_path / "old.key", new_key())
    new = write_key_file(tmp_path / "new.key", new_key())
    ids = [store_current(store.engine(old), "web", leaf) for _ in range(3)]
    before = raw_keys(store.engine(old))

    result = store.cli(store.config_file(old), "db", "rotate-key", "--new-key-file", str(new))
    assert result.returncode == 0, result.stderr
    assert "issued_certificate.key_pem: 3 re-encrypted" in result.stdout

    after = raw_keys(store.engine(new))
    assert all(value.startswith(PREFIX) for value in after) and not set(after) & set(before)
    assert [read_key(store.engine(new), i) for i in ids] == [leaf.key_pem] * 3
    with pytest.raises(StoreKeyError, match="does not hold"):
        read_key(store.engine(old), ids[0])
    # During the switch-over a node may hold "new, old": both kinds of row read.
    both = write_key_file(tmp_path / "both.key", *(p.read_text().strip() for p in (new, old)))
    assert read_key(store.engine(both), ids[0]) == leaf.key_pem


def test_encrypt_brings_plaintext_and_older_key_rows_under_the_configured_key(
        store: Store, leaf: Leaf, tmp_path: Path) -> None:
    old_key, new_key_text = new_key(), new_key()
    old = write_key_file(tmp_path / "old.key", old_key)
    both = write_key_file(tmp_path / "both.key", new_key_text, old_key)
    store_current(store.engine(old), "web", leaf)
    with store.engine(old).begin() as conn:  # a row written before any key was configured
        conn.execute(sa.text(
            "INSERT INTO issued_certificate (name, domains, key_type, serial, not_before, not_after, "
            "issuer, cert_pem, chain_pem, key_pem, chain_fingerprints, alternate_chains, directory_url, "
            "issued_at) SELECT name, domains, key_type, serial, not_before, not_after, issuer, cert_pem, "
            "chain_pem, :pem, chain_fingerprints, alternate_chains, directory_url, issued_at "
            "FROM issued_certificate"), {"pem": leaf.key_pem})
    engine = store.engine(both)
    with engine.connect() as conn:
        assert count_plaintext(conn, sealed_columns()) == 1

    result = store.cli(store.config_file(both), "db", "encrypt")
    assert result.returncode == 0, result.stderr
    stored = raw_keys(engine)
    ring = policy_of(engine).keyring
    assert ring is not None and all(ring.is_current(value) for value in stored)
    with engine.connect() as conn:
        assert count_plaintext(conn, sealed_columns()) == 0
        again = reseal(conn, sealed_columns(), ring, ring)  # nothing left to do
    assert again.changed == {} and again.current["issued_certificate.key_pem"] == 2


def test_migration_encrypts_existing_rows_when_a_key_is_configured(store: Store, leaf: Leaf,
                                                                   tmp_path: Path) -> None:
    """A store from before this feature (every head but 0008) with plaintext keys: upgrading
    with a key configured encrypts them."""
    url = f"sqlite:///{tmp_path / 'old.db'}" if store.url.startswith("sqlite") else None
    if url is None:  # PostgreSQL: the fixture's database, its schema stepped back below 0008
        url = store.url
        from alembic import command

        from certd.store.db import _alembic_config

        command.downgrade(_alembic_config(url), "0008_keys_at_rest@-1")
    else:
        for head in sorted(script_heads() - {"0008_keys_at_rest"}):
            upgrade(url, head)
    assert "0008_keys_at_rest" in script_heads() and MIGRATIONS_DIR.is_dir()
    plain_engine = make_engine(url, StoreConfig(key_env="CERTD_TEST_NO_KEY"))
    with plain_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO acme_account (directory_url, key_pem, created_at) "
                             "VALUES ('https://ca.test/dir', :pem, CURRENT_TIMESTAMP)"), {"pem": leaf.key_pem})
    assert raw_keys(plain_engine, "acme_account") == [leaf.key_pem]

    key_file = write_key_file(tmp_path / "store.key", new_key())
    keyed = StoreConfig(key_file=str(key_file), key_env=None)
    upgrade(url, store=keyed)
    engine = make_engine(url, keyed)
    (stored,) = raw_keys(engine, "acme_account")
    assert stored.startswith(PREFIX) and pem_body(leaf.key_pem) not in stored
    with session_scope(engine) as session:
        assert session.exec(sa.select(AcmeAccount)).scalars().one().key_pem == leaf.key_pem


def test_no_key_or_private_key_reaches_logs_or_errors(store: Store, leaf: Leaf, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    key = new_key()
    engine = store.engine(write_key_file(tmp_path / "store.key", key))
    errors: list[str] = []
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("sqlalchemy.engine").setLevel(logging.DEBUG)  # as with echo=True
        try:
            with session_scope(engine) as session:
                session.add(AcmeAccount(directory_url="https://ca.test/dir", key_pem=leaf.key_pem))
            with pytest.raises(sa.exc.IntegrityError) as duplicate:  # a failing INSERT of a key
                with session_scope(engine) as session:
                    session.add(AcmeAccount(directory_url="https://ca.test/dir", key_pem=leaf.key_pem))
            errors.append(str(duplicate.value))
            with pytest.raises(StoreKeyError) as wrong:
                with session_scope(store.engine(write_key_file(tmp_path / "w.key", new_key()))) as session:
                    session.exec(sa.select(AcmeAccount)).scalars().one()
            errors.append(str(wrong.value))
        finally:
            logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    (stored,) = raw_keys(engine, "acme_account")
    with session_scope(engine) as session:  # a row printed into a log line shows no key
        errors.append(repr(session.exec(sa.select(AcmeAccount)).scalars().one()))
    errors.append(repr(IssuedCertificate(name="web", key_pem=leaf.key_pem)))
    texts = errors + [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    assert len(caplog.records) > 5  # the SQL was logged, parameters hidden
    for text in texts:
        assert key not in text and pem_body(leaf.key_pem) not in text and stored not in text
    assert os.environ.get("CERTD_STORE_KEY") is None
