"""First contact on SQLite and PostgreSQL: chargers certd has never seen are admitted without a
store write in the handshake, and their rows arrive in batches - all of them, once, with the
state the policy gives, the first password, and what the charger told us at boot."""

from __future__ import annotations

import asyncio
import json

import pytest
import sqlalchemy as sa
from sqlmodel import select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from certd.ocpp import auth, charger_registry
from certd.ocpp.first_contact import FirstContactRegistrar
from certd.store.chargers import Charger, ChargerAuditEvent
from certd.store.db import make_engine, session_scope, upgrade
from tests.ocpp.conftest import (
    HOST, basic, client_context, make_config, open_ws, run, running, ws_url,
)
from tests.pki import store_current


@pytest.fixture
def store(ca, db_url: str):  # type: ignore[no-untyped-def]
    """An empty charger registry and a current RSA certificate, on SQLite or PostgreSQL."""
    upgrade(db_url)
    engine = make_engine(db_url)
    store_current(engine, "rsa", ca.issue([HOST], "rsa"))
    yield engine
    engine.dispose()


def _password(charger_id: str) -> str:
    return f"first-use-{charger_id}-0000"[:40]


def _rows(engine) -> dict[str, Charger]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return {c.charger_id: c for c in session.exec(select(Charger))}


def _registered_events(engine) -> list[str]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return [e.charger_id for e in session.exec(
            select(ChargerAuditEvent).where(ChargerAuditEvent.kind == "registered"))]


REPLACED = "replaced"  # _boot: a newer connection of the same id took over before the answer


async def _boot(service, ca, charger_id: str, password: str) -> str:  # type: ignore[no-untyped-def]
    """Connect as `charger_id`, send a BootNotification, return its status."""
    # Hundreds of handshakes at once on a busy test machine: a generous open timeout.
    async with connect(ws_url(service, f"/ocpp/{charger_id}"), ssl=client_context(ca),
                       server_hostname=HOST, subprotocols=["ocpp1.6"],
                       additional_headers=basic(charger_id, password), open_timeout=50) as ws:
        try:
            await ws.send(json.dumps([2, "b", "BootNotification", {
                "chargePointVendor": "FirstVendor", "chargePointModel": "FC-1"}]))
            return str(json.loads(await ws.recv())[2]["status"])
        except ConnectionClosed:
            if ws.close_code == 1000 and ws.close_reason == "replaced by a new connection":
                return REPLACED
            raise


async def _status(service, ca, charger_id: str, password: str) -> int:  # type: ignore[no-untyped-def]
    try:
        async with open_ws(service, f"/ocpp/{charger_id}", ca, headers=basic(charger_id, password)):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.mark.parametrize("policy, boot_status, registration", [
    ("accept", "Accepted", "accepted"),
    ("register", "Pending", "pending"),
])
def test_300_new_chargers_at_once_get_one_row_each_in_batches(ca, ca_file, store, policy,
                                                             boot_status, registration) -> None:  # type: ignore[no-untyped-def]
    ids = [f"NEW-{i:03d}" for i in range(300)]
    # 50 of them connect twice at the same moment (a charger retrying its first connection).
    attempts = ids + ids[:50]
    config = make_config(ca_file, unknown_chargers=policy, auth_failure_limit=1000)

    async def main() -> None:
        async with running(config, store) as service:
            registrar = service.shared.first_contact
            statuses = await asyncio.gather(*(_boot(service, ca, cid, _password(cid))
                                              for cid in attempts))
            assert statuses[50:len(ids)] == [boot_status] * (len(ids) - 50)
            # Of two connections with one id the later one replaces the earlier (maybe before
            # the earlier got its answer); both were admitted, one row was written.
            for first, second in zip(statuses[:50], statuses[len(ids):]):
                assert boot_status in (first, second)
                assert {first, second} <= {boot_status, REPLACED}
            # Written by the registrar's own task, without a flush from outside, within seconds.
            for _ in range(100):
                if len(await asyncio.to_thread(_rows, store)) == len(ids):
                    break
                await asyncio.sleep(0.05)
            assert len(await asyncio.to_thread(_rows, store)) == len(ids)
            assert registrar.stats.rows == len(ids) and registrar.stats.lost == 0
            assert 1 < registrar.stats.largest_batch and registrar.stats.batches < len(ids)

    run(main())
    rows = _rows(store)
    assert sorted(rows) == ids
    assert {r.registration for r in rows.values()} == {registration}
    assert all(auth.verify_password(rows[cid].password_hash, _password(cid)) for cid in ids[::37])
    # The state writer's updates found their rows: boot info and version are there.
    assert {(r.vendor, r.model, r.ocpp_version) for r in rows.values()} == {
        ("FirstVendor", "FC-1", "ocpp1.6")}
    assert all(r.first_seen is not None and r.connected_node is None for r in rows.values())
    assert sorted(_registered_events(store)) == ids


def test_an_impostor_is_refused_before_the_row_is_written(ca, ca_file, store) -> None:  # type: ignore[no-untyped-def]
    """Trust on first use holds while the row is still queued: the queued record answers."""
    async def main() -> None:
        async with running(make_config(ca_file, unknown_chargers="register"), store) as service:
            registrar = service.shared.first_contact
            async with registrar.write_lock:  # the store write waits; the handshakes do not
                assert await _boot(service, ca, "NEW-1", "first-use-password-42") == "Pending"
                assert await _status(service, ca, "NEW-1", "impostor-password-00") == 401
                assert await _status(service, ca, "NEW-1", "first-use-password-42") == 101
                assert await asyncio.to_thread(charger_registry.lookup, store, "NEW-1") is None
                assert registrar.pending("NEW-1").registration == "pending"
            await service.shared.writer.flush()
            assert registrar.pending("NEW-1") is None
            record = await asyncio.to_thread(charger_registry.lookup, store, "NEW-1")
            assert record.registration == "pending"
            assert auth.verify_password(record.password_hash, "first-use-password-42")
            assert await _status(service, ca, "NEW-1", "impostor-password-00") == 401

    run(main())
    assert _registered_events(store) == ["NEW-1"]


def test_a_row_created_elsewhere_meanwhile_stands_and_the_charger_logs_in_again(ca, ca_file, store) -> None:  # type: ignore[no-untyped-def]
    """Another node (or `certd chargers add`) writes the id between our lookup and our write."""
    async def main() -> None:
        async with running(make_config(ca_file, unknown_chargers="accept"), store) as service:
            registrar = service.shared.first_contact
            async with registrar.write_lock:
                ws = await open_ws(service, "/ocpp/RACE-1", ca,
                                   headers=basic("RACE-1", "first-use-password-42"))
                await asyncio.to_thread(
                    charger_registry.insert_charger, store, "RACE-1",
                    password_hash=auth.hash_password("operator-password-01"), heartbeat_class="gsm")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1008
            assert registrar.stats.lost == 1
            assert await _status(service, ca, "RACE-1", "first-use-password-42") == 401
            assert await _status(service, ca, "RACE-1", "operator-password-01") == 101

    run(main())
    assert _rows(store)["RACE-1"].heartbeat_class == "gsm"
    assert _registered_events(store) == []


def test_a_clean_stop_writes_every_queued_row(store) -> None:  # type: ignore[no-untyped-def]
    """Rows queued and never written by the task (it was not started) are written by close()."""
    async def main() -> None:
        registrar = FirstContactRegistrar(store, "default")
        for i in range(300):
            registrar.register(f"Q-{i:03d}", "pending", None, "10.0.0.1")
        # A second registration of an id keeps the first one's record.
        first = registrar.pending("Q-000")
        assert registrar.register("Q-000", "accepted", "$argon2id$other", None) is first
        await registrar.close()
        assert registrar.stats.rows == 300 and registrar.stats.batches == 1

    run(main())
    rows = _rows(store)
    assert len(rows) == 300
    assert {(r.registration, r.password_hash, r.heartbeat_class) for r in rows.values()} == {
        ("pending", None, "default")}
    assert len(_registered_events(store)) == 300


def test_a_failed_write_keeps_its_rows_for_the_next_one(store) -> None:  # type: ignore[no-untyped-def]
    def rename(old: str, new: str) -> None:
        with store.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))

    async def main() -> None:
        registrar = FirstContactRegistrar(store, "default")
        registrar.register("KEEP-1", "accepted", None, None)
        rename("charger", "charger_away")
        try:
            with pytest.raises(sa.exc.DBAPIError):
                await registrar.flush()
            registrar.register("KEEP-2", "accepted", None, None)
            assert registrar.pending("KEEP-1") is not None
        finally:
            rename("charger_away", "charger")
        await registrar.close()

    run(main())
    assert sorted(_rows(store)) == ["KEEP-1", "KEEP-2"]
    assert sorted(_registered_events(store)) == ["KEEP-1", "KEEP-2"]
