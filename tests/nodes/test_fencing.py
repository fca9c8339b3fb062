"""Fencing: a process that lost a lease writes nothing of its work, a takeover waits for a fenced
write in progress, and a holder that cannot reach the store gives its lease up on its own."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import sqlalchemy as sa

from certd.renewal import pipeline, records
from certd.store import deploy_state, leases
from certd.store.db import make_engine, session_scope, upgrade
from certd.store.models import IssuanceAttempt, ManagedCertificate
from tests.nodes.conftest import wait_until
from tests.nodes.tcp_proxy import TcpProxy


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _expire(engine: sa.Engine, name: str) -> None:
    table = leases.Lease.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.name == name).values(
            expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))


def test_a_holder_whose_lease_was_taken_over_writes_nothing(engine: sa.Engine) -> None:
    name = leases.certificate_lease("web")
    old = leases.acquire(engine, name, "certd run")
    records.upsert(engine, ManagedCertificate, "web", old.fence, failure_count=1)  # still ours: written
    _expire(engine, name)  # its node stopped renewing (cut off, frozen)
    new = leases.acquire(engine, name, "certd run")
    assert new.taken_over is not None

    with pytest.raises(leases.LeaseLost):
        records.upsert(engine, ManagedCertificate, "web", old.fence, failure_count=7, last_error="late")
    with pytest.raises(leases.LeaseLost):
        pipeline.record_deploy(engine, "web", None, True, node="node-a", fence=old.fence)
    with session_scope(engine) as session:
        session.add(IssuanceAttempt(name="web"))
    assert pipeline.abandon_interrupted(engine, "web", "node-a", new.fence) == 1
    with pytest.raises(leases.LeaseLost):
        pipeline.abandon_interrupted(engine, "web", "node-b", old.fence)
    with session_scope(engine) as session:
        managed = session.get(ManagedCertificate, "web")
        assert managed is not None and managed.failure_count == 1 and managed.last_error is None
        assert deploy_state.load(engine, "node-a", "web") == deploy_state.Deployed(None, False)
        attempt = session.exec(sa.select(IssuanceAttempt)).scalars().one()
        assert attempt.outcome == "abandoned" and "node-a" in (attempt.error or "")
    records.upsert(engine, ManagedCertificate, "web", new.fence, failure_count=0)  # the new holder may


def test_a_takeover_waits_for_the_fenced_write_in_progress(pg_url: str) -> None:
    """PostgreSQL: the fence share-locks the lease row, so the taker's compare-and-swap comes after
    the write's commit; the write is complete and the taker sees it."""
    upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        name = leases.certificate_lease("web")
        old = leases.acquire(engine, name, "certd run")
        _expire(engine, name)
        fenced: list[float] = []

        def slow_write() -> None:
            with session_scope(engine) as session:
                old.fence.verify(session.connection())
                fenced.append(time.monotonic())
                time.sleep(1.0)
                session.add(ManagedCertificate(name="web", failure_count=3))

        writer = threading.Thread(target=slow_write)
        writer.start()
        wait_until(lambda: fenced, 10, "the fenced write to start")
        new = leases.acquire(engine, name, "certd run")  # waits for the write's commit
        taken = time.monotonic()
        writer.join(10)
        assert taken - fenced[0] >= 0.9 and new.taken_over is not None
        with session_scope(engine) as session:
            assert session.get(ManagedCertificate, "web").failure_count == 3  # type: ignore[union-attr]
        with pytest.raises(leases.LeaseLost):
            with session_scope(engine) as session:
                old.fence.verify(session.connection())
    finally:
        engine.dispose()


def test_a_holder_cut_from_the_store_gives_its_lease_up_before_anyone_may_take_it(pg_url: str) -> None:
    upgrade(pg_url)
    url = sa.engine.make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", int(url.port or 5432)).start()
    engine = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    direct = make_engine(pg_url)
    ttl = dt.timedelta(seconds=2)
    try:
        with leases.held(engine, "job:dns-sync", "certd run", ttl=ttl) as lease:
            time.sleep(1.2)  # renewed meanwhile
            assert not lease.lost.is_set()
            cut_at = time.monotonic()
            proxy.cut()
            assert lease.lost.wait(5)
            lost_after = time.monotonic() - cut_at
            # Given up within its TTL: before the lease can expire for the others.
            assert lost_after < ttl.total_seconds(), lost_after
            time.sleep(ttl.total_seconds())
            taker = leases.acquire(direct, "job:dns-sync", "certd run", ttl=ttl)
            assert taker.taken_over is not None
            proxy.restore()
    finally:
        proxy.stop()
        engine.dispose()
        direct.dispose()


def test_any_event_is_set_by_either() -> None:
    shutdown, lost = threading.Event(), threading.Event()
    either = leases.AnyEvent(shutdown, lost, None)
    assert not either.wait(0.05)
    threading.Timer(0.1, lost.set).start()
    started = time.monotonic()
    assert either.wait(5) and time.monotonic() - started < 1
