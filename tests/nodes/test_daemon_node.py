"""One `certd run` (in this process) on PostgreSQL, as a node among others that this test plays:
work another node leaves behind is taken over within seconds, a lease another node frees wakes the
check that found it busy, and the node's connections carry TCP keepalives."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import sqlalchemy as sa

from certd.dns.challenges import Dns01Records
from certd.dns.registry import open_dns
from certd.store import leases
from certd.store.db import session_scope
from certd.store.models import ChallengeRecord
from tests.daemon.conftest import cert_toml, run, running_daemon


def _plant_lease(engine: sa.Engine, name: str, expires_in: float) -> leases.HeldLease:
    """A lease of `name` held by another node (another host: no PID check applies)."""
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        conn.execute(sa.insert(leases.Lease.__table__).values(  # type: ignore[attr-defined]
            name=name, holder="node-b pid 4242", purpose="certd run", token="node-b", node="another-boot/1",
            pid=4242, acquired_at=now, expires_at=now + dt.timedelta(seconds=expires_in)))
    return leases.HeldLease(name, "node-b", lost=threading.Event())


def test_work_left_by_another_node_is_taken_over_and_a_freed_lease_wakes_a_busy_check(
        make_setup, pg_url: str) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600, db_url=pg_url)
    other = _plant_lease(setup.engine, leases.certificate_lease("web"), expires_in=60)

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            assert daemon.cluster is not None
            assert await daemon.wait_for(lambda: "web" in daemon.results, 30)
            busy = daemon.results["web"]
            assert busy.action == "busy" and setup.current("web") is None
            # The other node finishes and frees the lease: the busy check runs again at once
            # (a NOTIFY), not at the lease's expiry a minute later.
            freed = time.monotonic()
            await asyncio.to_thread(leases.release, setup.engine, other)
            assert await daemon.wait_for(lambda: setup.current("web") is not None, 30)
            assert time.monotonic() - freed < 10

            # A periodic job another node was running when it died: its lease runs out and this
            # node runs the job within seconds (not at its 10-minute interval).
            dns = open_dns(setup.config)
            await asyncio.to_thread(Dns01Records(dns, setup.engine, None).present,
                                    "_acme-challenge.local.example.com", "x" * 43)
            assert len(setup.txt_records()) == 1
            _plant_lease(setup.engine, leases.job_lease("challenge-cleanup"), expires_in=1)
            left = time.monotonic()

            def challenge_rows() -> list[object]:
                with session_scope(setup.engine) as session:
                    return list(session.exec(sa.select(ChallengeRecord)).all())

            # The record leaves DNS first, then its row (a moment later): wait for both.
            while (setup.txt_records() or challenge_rows()) and time.monotonic() - left < 15:
                await asyncio.sleep(0.1)
            assert setup.txt_records() == [] and time.monotonic() - left < 1 + 15
            assert challenge_rows() == []

            # Keepalives on both ends of the node's connections (certd.store.pg).
            with setup.engine.connect() as conn:
                assert conn.execute(sa.text("SHOW tcp_keepalives_idle")).scalar() == "5"
                assert conn.execute(sa.text("SHOW tcp_user_timeout")).scalar() == "10000"  # ms

    run(scenario())
