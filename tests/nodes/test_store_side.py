"""The store side of several nodes, without node processes: the NOTIFY triggers and the listener
(with reconnection), node presence and the gone-node rule, routed calls claimed once, the
migration against the models, and `certd nodes` output."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading

import pytest
import sqlalchemy as sa

from certd.ocpp import charger_registry
from certd.runtime import charger_calls, nodes
from certd.runtime.notify_listener import NotifyListener, parse
from certd.store import leases
from certd.store.db import make_engine, session_scope, upgrade
from certd.store.models import ManagedCertificate
from certd.store.nodes import CALL_DONE, CALL_RUNNING, ChargerCall, Node
from certd.store.rollover import RolloverGate
from tests.nodes.conftest import wait_until


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def test_the_migration_matches_the_models_and_goes_down_and_up(db_url: str) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    import certd.store.all_tables  # noqa: F401
    from certd.store.db import _alembic_config

    ours = ("'node'", "node_deploy", "charger_call")
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    SQLModel.metadata)
        assert [d for d in diff if any(t in repr(d) for t in ours)] == []
        command.downgrade(_alembic_config(db_url), "0006_rollover")  # one of the branches it merges
        assert not {"node", "node_deploy", "charger_call"} & set(sa.inspect(engine).get_table_names())
        upgrade(db_url)
        assert {"node", "node_deploy", "charger_call"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_every_change_the_nodes_act_on_is_notified_and_the_listener_reconnects(pg_url: str) -> None:
    upgrade(pg_url)
    engine = make_engine(pg_url)
    events: list[dict] = []  # type: ignore[type-arg]
    connected: list[int] = []

    async def scenario() -> None:
        listener = NotifyListener(pg_url, asyncio.get_running_loop(), events.append, lambda: connected.append(1))
        listener.start()
        try:
            await asyncio.to_thread(listener.connected.wait, 10)
            with session_scope(engine) as session:
                session.add(ManagedCertificate(name="web"))
            with engine.begin() as conn:
                conn.execute(sa.update(ManagedCertificate.__table__).values(failure_count=2))  # type: ignore[attr-defined]
            charger_registry.insert_charger(engine, "CP1", password_hash=None, heartbeat_class="default")
            charger_registry.update_charger(engine, "CP1", enabled=False)
            charger_registry.update_charger(engine, "CP1", last_address="10.0.0.1")  # not a change nodes act on
            with session_scope(engine) as session:
                session.add(RolloverGate(listener="wallbox", cert_name="web"))
            leases.release(engine, leases.acquire(engine, "certificate:web", "test"))
            await until(lambda: {e["k"] for e in events} >= {"issued", "charger", "gate", "lease"})
            assert [e for e in events if e["k"] == "issued"] == [{"k": "issued", "name": "web", "id": None}]
            assert [e for e in events if e["k"] == "charger"] == [{"k": "charger", "id": "CP1"}]
            assert {"k": "lease", "name": "certificate:web"} in events

            # The server ends the listener's session (a restart, a failover): it connects again,
            # says so (the caller resyncs), and hears the next change.
            with engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE query LIKE 'LISTEN%' OR query = 'SELECT 1'"))
            await until(lambda: listener.connections >= 2 and len(connected) >= 2, 15)
            charger_registry.update_charger(engine, "CP1", enabled=True)
            await until(lambda: sum(e["k"] == "charger" for e in events) == 2)
        finally:
            await asyncio.to_thread(listener.close)

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()
    assert parse("not json") is None and parse('{"x": 1}') is None


def test_node_states_and_the_chargers_of_a_gone_node(engine: sa.Engine) -> None:
    now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)
    gone_after = dt.timedelta(seconds=30)
    nodes.announce(engine, "node-a", "10.0.0.1:9402", now - dt.timedelta(minutes=5))
    nodes.announce(engine, "node-b", None, now - dt.timedelta(minutes=5))
    nodes.announce(engine, "node-c", None, now - dt.timedelta(minutes=5))
    nodes.heartbeat(engine, "node-a", now - dt.timedelta(seconds=29))
    nodes.heartbeat(engine, "node-b", now - dt.timedelta(seconds=31))
    nodes.leave(engine, "node-c", now - dt.timedelta(seconds=40))
    states = {n.name: n.state for n in nodes.list_nodes(engine, now, gone_after)}
    assert states == {"node-a": "up", "node-b": "gone", "node-c": "stopped"}

    table = charger_registry.Charger.__table__  # type: ignore[attr-defined]
    for charger_id, node in (("CP1", "node-a"), ("CP2", "node-b"), ("CP3", "node-b"), ("CP4", "certd-serve")):
        charger_registry.insert_charger(engine, charger_id, password_hash=None, heartbeat_class="default")
        with engine.begin() as conn:
            conn.execute(sa.update(table).where(table.c.charger_id == charger_id).values(
                connected_node=node, connected_since=now))
    assert nodes.release_chargers_of_gone(engine, "node-a", now, gone_after) == {"node-b": 2}
    held = {r.charger_id: r.connected_node for r in charger_registry.list_chargers(engine)}
    assert held == {"CP1": "node-a", "CP2": None, "CP3": None, "CP4": "certd-serve"}  # an unannounced process: left


def test_a_routed_call_is_claimed_by_one_claimer_and_answered_once(engine: sa.Engine) -> None:
    charger_registry.insert_charger(engine, "CP1", password_hash=None, heartbeat_class="default")
    with pytest.raises(charger_calls.ChargerUnreachable):
        charger_calls.request(engine, "CP1", "GetInstalledCertificateIds", {}, requested_by="test")
    charger_registry.update_charger(engine, "CP1", connected_node="node-b")
    with pytest.raises(Exception, match="not an OCPP action"):
        charger_calls.request(engine, "CP1", "Drop Table", {}, requested_by="test")
    call_id = charger_calls.request(engine, "CP1", "GetInstalledCertificateIds",
                                    {"certificate_type": "CentralSystemRootCertificate"}, requested_by="test")
    claimed: list[list[ChargerCall]] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        claimed.append(charger_calls.claim(engine, "node-b"))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(len(c) for c in claimed) == [0, 0, 0, 1]
    assert charger_calls.claim(engine, "node-a") == []
    assert charger_calls.get(engine, call_id).state == CALL_RUNNING
    charger_calls.finish(engine, call_id, result={"status": "Accepted"})
    done = charger_calls.wait(engine, call_id, 5)
    assert done.state == CALL_DONE and json.loads(done.result_json or "") == {"status": "Accepted"}


def test_certd_nodes_lists_nodes_and_what_each_deployed(engine: sa.Engine, db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from certd.store import deploy_state
    from certd.store.types import utcnow

    config = tmp_path / "certd.toml"
    config.write_text(f'database_url = "{db_url}"\nstate_dir = "{tmp_path}"\n[[certificates]]\nname = "web"\n'
                      'domains = ["local.example.com"]\n')
    now = utcnow()
    nodes.announce(engine, "node-a", "10.0.0.1:9402", now)
    nodes.announce(engine, "node-b", None, now - dt.timedelta(minutes=2))
    with session_scope(engine) as session:
        deploy_state.record(session, "node-a", "web", None, hooks_ok=False)
    deploy_state.record_listeners(engine, "node-a", {"web": {"wallbox": 7}})
    out = subprocess.run([sys.executable, "-m", "certd", "--config", str(config), "nodes"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NODE", "STATE", "ADDRESS", "VERSION", "LAST", "SEEN", "CHARGERS", "WORKING", "ON"]
    assert lines[1].split()[:3] == ["node-a", "up", "10.0.0.1:9402"]
    assert lines[2].split()[:2] == ["node-b", "gone"]
    assert "web          node-a  - (hooks pending)  wallbox #7" in out.stdout
    data = json.loads(subprocess.run([sys.executable, "-m", "certd", "--config", str(config), "nodes", "--json"],
                                     capture_output=True, text=True, timeout=60).stdout)
    assert data["deploy"] == {"web": {"node-a": {"files": None, "hooks_pending": True,
                                                 "listeners": {"wallbox": 7}}}}
    with session_scope(engine) as session:
        assert session.get(Node, "node-b") is not None


async def until(predicate, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(wait_until, predicate, limit, "the notifications")


def test_a_call_from_code_in_a_node_is_routed_to_the_holder_and_its_answer_returned(engine: sa.Engine) -> None:
    """`call_anywhere` without the charger on this node: a row for the holder, the holder's answer back
    (the holder is played here by a thread that claims and answers, as run_claimed does)."""
    charger_registry.insert_charger(engine, "CP9", password_hash=None, heartbeat_class="default")
    charger_registry.update_charger(engine, "CP9", connected_node="node-b")
    stop = threading.Event()

    def holder() -> None:
        while not stop.is_set():
            for call in charger_calls.claim(engine, "node-b"):
                charger_calls.finish(engine, call.id, result={"status": "Accepted", "asked": call.action})  # type: ignore[arg-type]
            stop.wait(0.05)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        answer = asyncio.run(charger_calls.call_anywhere(None, engine, "CP9", "GetInstalledCertificateIds", {},
                                                         requested_by="node-a", timeout=10))
    finally:
        stop.set()
        thread.join(10)
    assert answer == {"status": "Accepted", "asked": "GetInstalledCertificateIds"}


def test_nodes_starting_together_create_each_certificate_row_once(pg_url: str) -> None:
    """Every node creates the rows of the certificates it is configured with at start; on a new
    store several nodes do so at the same moment. None of them may fail (a node used to die at
    start with a duplicate key), and each row exists once."""
    from certd.renewal.records import ensure_rows
    from certd.store.renewal import RenewalState

    upgrade(pg_url)
    engines = [make_engine(pg_url) for _ in range(4)]
    try:
        for round_number in range(20):
            names = [f"cert-{round_number}-{k}" for k in range(3)]
            barrier = threading.Barrier(len(engines))
            errors: list[BaseException] = []

            def start_node(engine: sa.Engine) -> None:
                barrier.wait()
                try:
                    ensure_rows(engine, names)
                except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                    errors.append(exc)

            threads = [threading.Thread(target=start_node, args=(e,)) for e in engines]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert errors == []
        with session_scope(engines[0]) as session:
            managed = list(session.exec(sa.select(ManagedCertificate.name)).scalars())
            states = list(session.exec(sa.select(RenewalState.name)).scalars())
        assert len(managed) == len(set(managed)) == 60 and sorted(states) == sorted(managed)
    finally:
        for engine in engines:
            engine.dispose()
