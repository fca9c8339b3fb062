"""Migration 0003_hosts on SQLite and PostgreSQL: up, matches the model, down."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from certd.store.db import _alembic_config, make_engine, session_scope, upgrade
from certd.dns.sync import owned_records
from certd.store.hosts import ManagedDnsRecord, find_row


def test_migration_up_matches_model_and_down(db_url: str):
    upgrade(db_url, "0003_hosts")
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    SQLModel.metadata)
        assert [d for d in diff if "managed_dns_record" in str(d)] == []

        with session_scope(engine) as session:
            session.add(ManagedDnsRecord(name="local.example.com", type="A", zone_id="z", zone_name="example.com",
                                         record_id="r1", content="192.168.1.100", keep=True))
        with session_scope(engine) as session:
            [owned] = owned_records(session)
            assert (owned.name, owned.keep, owned.state) == ("local.example.com", True, "present")
            assert find_row(session, "local.example.com", "AAAA") is None

        # One row per name and type: a second A row for the same name is refused.
        with pytest.raises(sa.exc.IntegrityError):
            with session_scope(engine) as session:
                session.add(ManagedDnsRecord(name="local.example.com", type="A", zone_id="z",
                                             zone_name="example.com"))

        command.downgrade(_alembic_config(db_url), "0001_core")
        assert "managed_dns_record" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
