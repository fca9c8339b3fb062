"""Engine, sessions and schema upgrades for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import Session

from certd.config.store import StoreConfig
from certd.errors import CertdError


def _migrations_dir() -> Path:
    """migrations/ of a source checkout, else the copy a wheel installs under sys.prefix."""
    import sys

    source = Path(__file__).resolve().parent.parent.parent / "migrations"
    if source.is_dir():
        return source
    return Path(sys.prefix) / "share" / "certd" / "migrations"


MIGRATIONS_DIR = _migrations_dir()


class StoreError(CertdError):
    """The database is unreachable or its schema cannot be brought up to date."""


def _prepare_sqlite_file(url: sa.engine.URL) -> None:
    """Create the SQLite file 0600 before SQLite does (it would use the umask)."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


def make_engine(url: str, store: StoreConfig | None = None) -> sa.Engine:
    """The engine for `url`; private keys written through it are sealed as `store` says
    (default: the key in $CERTD_STORE_KEY, if set). Statement parameters never appear
    in errors or logs (they may hold a private key)."""
    from certd.store.crypto import load_keyring
    from certd.store.sealing import register

    store = store or StoreConfig()
    keyring = load_keyring(store)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(parsed)
        engine = sa.create_engine(
            parsed, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True,
        )
        register(engine, keyring, store.key_setting())

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    from certd.store.pg import keepalive_args

    extra = keepalive_args(parsed.query) if parsed.get_backend_name() == "postgresql" else {}
    engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=extra, hide_parameters=True)
    register(engine, keyring, store.key_setting())
    return engine


@contextmanager
def session_scope(engine: sa.Engine) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except sa.exc.StatementError as exc:
            session.rollback()
            if isinstance(exc.orig, CertdError):  # e.g. no store key: the user's error, not SQL's
                raise exc.orig from None
            raise
        except BaseException:
            session.rollback()
            raise


def _alembic_config(url: str, store: StoreConfig | None = None):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    cfg.attributes["store"] = store  # the migration that encrypts existing keys needs the key
    return cfg


_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=]+)?=\s*(.+)$", re.MULTILINE)


def script_heads() -> set[str]:
    """Head revisions of migrations/, read from the files without importing Alembic.

    Importing Alembic costs a quarter of a second; a command that finds the
    schema current skips it entirely.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in MIGRATIONS_DIR.glob("versions/*.py"):
        for key, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            names = set(re.findall(r"[\"']([^\"']+)[\"']", value))
            (revisions if key == "revision" else parents).update(names)
    return revisions - parents


def database_heads(engine: sa.Engine) -> set[str]:
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    except sa.exc.DBAPIError:
        return set()
    return {row[0] for row in rows}


def upgrade(url: str, revision: str = "heads", store: StoreConfig | None = None) -> None:
    """Bring the schema to `revision`; safe and cheap to call at every start."""
    if revision == "heads" and MIGRATIONS_DIR.is_dir():
        engine = make_engine(url, store)
        try:
            if database_heads(engine) == script_heads():
                return
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot reach the database: {exc.orig}") from None
        finally:
            engine.dispose()
    from alembic import command

    if not MIGRATIONS_DIR.is_dir():
        raise StoreError(f"migrations directory {MIGRATIONS_DIR} is missing from this install")
    try:
        if make_url(url).get_backend_name() == "sqlite":
            _prepare_sqlite_file(make_url(url))
        command.upgrade(_alembic_config(url, store), revision)
    except sa.exc.OperationalError as exc:
        raise StoreError(f"cannot reach the database: {exc.orig}") from None


def current_revision(engine: sa.Engine) -> str | None:
    """The schema's revision(s), comma-separated; None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return ", ".join(sorted(heads)) or None
