"""Charger registry on SQLite and PostgreSQL: rows, batched state writes, node cleanup, migration."""

import asyncio
import datetime as dt

import pytest
import sqlalchemy as sa
from sqlmodel import select

from certd.ocpp import charger_registry
from certd.store.chargers import Charger, ChargerAuditEvent
from certd.store.db import make_engine, session_scope, upgrade


def _engine(db_url: str) -> sa.Engine:
    upgrade(db_url)
    return make_engine(db_url)


def test_rows_roundtrip(db_url: str) -> None:
    engine = _engine(db_url)
    record = charger_registry.insert_charger(engine, "DE*BMW*0123456789", password_hash="$argon2id$x",
                                     heartbeat_class="gsm")
    assert record.heartbeat_class == "gsm" and record.enabled
    try:
        charger_registry.insert_charger(engine, "DE*BMW*0123456789", password_hash=None, heartbeat_class="default")
    except charger_registry.ChargerExists:
        pass
    else:
        raise AssertionError("a second insert of the same id must fail")
    again = charger_registry.insert_charger(engine, "DE*BMW*0123456789", password_hash=None,
                                    heartbeat_class="default", if_absent=True)
    assert again == record
    assert charger_registry.set_password_hash(engine, "DE*BMW*0123456789", "$argon2id$y")
    assert charger_registry.lookup(engine, "DE*BMW*0123456789").password_hash == "$argon2id$y"
    assert [c.charger_id for c in charger_registry.list_chargers(engine)] == ["DE*BMW*0123456789"]
    assert charger_registry.remove_charger(engine, "DE*BMW*0123456789")
    assert charger_registry.lookup(engine, "DE*BMW*0123456789") is None
    assert not charger_registry.remove_charger(engine, "DE*BMW*0123456789")
    engine.dispose()


def test_writer_batches_state_and_keeps_nothing_only_in_memory(db_url: str) -> None:
    engine = _engine(db_url)
    for cid in ("CP1", "CP2"):
        charger_registry.insert_charger(engine, cid, password_hash=None, heartbeat_class="default")
    clock = [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)]

    async def scenario() -> None:
        writer = charger_registry.RegistryWriter(engine, "node-a", flush_interval=0.01, clock=lambda: clock[0])
        writer.connected("CP1", "ocpp1.6", "127.0.0.1")
        writer.boot("CP1", vendor="V", model="M", firmware_version="1.0", serial_number=None)
        writer.connected("CP2", "ocpp2.0.1", "127.0.0.2")
        writer.audit("auth_failed", "CP9", "127.0.0.9", "wrong password")
        await writer.flush()
        clock[0] += dt.timedelta(seconds=20)
        writer.seen("CP1")
        writer.disconnected("CP2")
        await writer.close()

    asyncio.run(scenario())
    with session_scope(engine) as session:
        cp1, cp2 = session.get(Charger, "CP1"), session.get(Charger, "CP2")
        events = list(session.exec(select(ChargerAuditEvent)))
    assert (cp1.connected_node, cp1.ocpp_version, cp1.vendor, cp1.model, cp1.firmware_version) == (
        "node-a", "ocpp1.6", "V", "M", "1.0")
    assert cp1.first_seen == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert cp1.last_seen == dt.datetime(2026, 1, 1, 0, 0, 20, tzinfo=dt.timezone.utc)
    assert cp2.connected_node is None and cp2.ocpp_version == "ocpp2.0.1"
    assert [(e.kind, e.charger_id, e.detail) for e in events] == [("auth_failed", "CP9", "wrong password")]

    # A restart of node-a clears only what node-a held.
    charger_registry.update_charger(engine, "CP2", connected_node="node-b")
    assert charger_registry.clear_node(engine, "node-a") == 1
    assert charger_registry.lookup(engine, "CP1") is not None
    with session_scope(engine) as session:
        assert session.get(Charger, "CP1").connected_node is None
        assert session.get(Charger, "CP2").connected_node == "node-b"
    engine.dispose()


def test_disconnect_does_not_clear_a_charger_now_on_another_node(db_url: str) -> None:
    engine = _engine(db_url)
    charger_registry.insert_charger(engine, "CP1", password_hash=None, heartbeat_class="default")
    charger_registry.update_charger(engine, "CP1", connected_node="node-b")

    async def scenario() -> None:
        writer = charger_registry.RegistryWriter(engine, "node-a")
        writer.disconnected("CP1")
        await writer.flush()

    asyncio.run(scenario())
    with session_scope(engine) as session:
        assert session.get(Charger, "CP1").connected_node == "node-b"
    engine.dispose()


def test_a_failed_write_keeps_the_connect_when_a_heartbeat_came_meanwhile(db_url: str) -> None:
    """The store is away during one flush (charger table renamed); a heartbeat queued while that
    write runs must not replace the connect, version and boot info when the batch is put back."""
    engine = _engine(db_url)
    charger_registry.insert_charger(engine, "CP1", password_hash=None, heartbeat_class="default")
    clock = [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)]

    def rename(old: str, new: str) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))

    async def scenario() -> None:
        writer = charger_registry.RegistryWriter(engine, "node-a", clock=lambda: clock[0])
        writer.connected("CP1", "ocpp1.6", "127.0.0.1")
        writer.boot("CP1", vendor="V", model="M", firmware_version="1.0", serial_number=None)
        rename("charger", "charger_away")
        try:
            failing = asyncio.ensure_future(writer.flush())
            await asyncio.sleep(0)  # the flush has taken the batch and is writing it
            assert "CP1" not in writer._pending
            clock[0] += dt.timedelta(seconds=20)
            writer.seen("CP1")  # the charger's heartbeat, while the write is under way
            with pytest.raises(sa.exc.DBAPIError):
                await failing
        finally:
            rename("charger_away", "charger")
        await writer.flush()

    asyncio.run(scenario())
    with session_scope(engine) as session:
        cp1 = session.get(Charger, "CP1")
    assert (cp1.connected_node, cp1.ocpp_version, cp1.last_address, cp1.vendor, cp1.firmware_version) == (
        "node-a", "ocpp1.6", "127.0.0.1", "V", "1.0")
    assert cp1.connected_since == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert cp1.last_seen == dt.datetime(2026, 1, 1, 0, 0, 20, tzinfo=dt.timezone.utc)
    engine.dispose()


def test_pending_changes_merge_field_by_field() -> None:
    """A disconnect queued after a failed connect wins; what it does not touch is kept."""
    at = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    failed = charger_registry._Pending(connected=True, connected_since=at, version="ocpp2.0.1", address="10.0.0.1",
                               last_seen=at, boot={"vendor": "V", "model": "M"})
    newer = charger_registry._Pending(connected=False, last_seen=at + dt.timedelta(seconds=5),
                              boot={"model": "M2"})
    merged = failed.merged_with(newer)
    assert (merged.connected, merged.connected_since) == (False, None)
    assert (merged.version, merged.address) == ("ocpp2.0.1", "10.0.0.1")
    assert merged.last_seen == at + dt.timedelta(seconds=5)
    assert merged.boot == {"vendor": "V", "model": "M2"}


def test_migration_downgrade_and_upgrade(db_url: str) -> None:
    from alembic import command

    from certd.store.db import _alembic_config

    upgrade(db_url)
    command.downgrade(_alembic_config(db_url), "0002_chargers-1")
    engine = make_engine(db_url)
    tables = sa.inspect(engine).get_table_names()
    assert "charger" not in tables and "charger_audit_event" not in tables
    assert "issued_certificate" in tables
    engine.dispose()
    upgrade(db_url)
    engine = make_engine(db_url)
    assert {"charger", "charger_audit_event"} <= set(sa.inspect(engine).get_table_names())
    engine.dispose()
