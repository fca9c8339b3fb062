"""Leases in the store: one certd process at a time per certificate and per periodic job."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
import sqlalchemy as sa

from certd.renewal.check import Maintainer
from certd.store import leases
from certd.store.db import make_engine, upgrade
from tests.daemon.conftest import cert_toml


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _row(engine: sa.Engine, name: str):  # type: ignore[no-untyped-def]
    table = leases.Lease.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return conn.execute(sa.select(table).where(table.c.name == name)).first()


def test_a_held_lease_is_refused_with_who_holds_it_until_released(engine: sa.Engine) -> None:
    first = leases.acquire(engine, "certificate:web", "certd run")
    with pytest.raises(leases.LeaseBusy) as busy:
        leases.acquire(engine, "certificate:web", "certd renew")
    message = str(busy.value)
    assert "certificate:web is held by certd run on " in message and leases.this_process() in message
    assert busy.value.exit_code == leases.EX_TEMPFAIL
    leases.acquire(engine, "certificate:other", "certd renew")  # other names are independent
    leases.release(engine, first)
    assert _row(engine, "certificate:web") is None
    second = leases.acquire(engine, "certificate:web", "certd renew")
    assert _row(engine, "certificate:web").purpose == "certd renew" and second.token != first.token


def test_an_expired_lease_is_taken_over_and_the_old_holder_learns_it_lost(engine: sa.Engine) -> None:
    now = [dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)]
    ttl = dt.timedelta(minutes=2)
    crashed = leases.acquire(engine, "job:dns-sync", "certd run", ttl=ttl, clock=lambda: now[0])
    now[0] += dt.timedelta(minutes=1)
    assert leases.renew(engine, crashed, ttl=ttl, clock=lambda: now[0])  # still ours: pushed to 12:03
    now[0] += dt.timedelta(minutes=1, seconds=59)
    with pytest.raises(leases.LeaseBusy):
        leases.acquire(engine, "job:dns-sync", "certd run", ttl=ttl, clock=lambda: now[0])
    now[0] += dt.timedelta(seconds=2)  # 12:03:01: expired
    taker = leases.acquire(engine, "job:dns-sync", "certd run", ttl=ttl, clock=lambda: now[0])
    assert not leases.renew(engine, crashed, ttl=ttl, clock=lambda: now[0])
    leases.release(engine, crashed)  # a late release by the old holder must not free the new one
    assert _row(engine, "job:dns-sync").token == taker.token


def test_a_crashed_holder_on_this_machine_frees_its_lease_at_once_others_wait(engine: sa.Engine) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # exited and reaped: its PID runs nothing (unless reused, which only means waiting)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    table = leases.Lease.__table__  # type: ignore[attr-defined]
    now = dt.datetime.now(dt.timezone.utc)

    def plant(name: str, node: str | None, pid: int) -> None:
        with engine.begin() as conn:
            conn.execute(sa.insert(table).values(
                name=name, holder=f"host pid {pid}", purpose="certd issue", token=f"t-{name}",
                node=node, pid=pid, acquired_at=now, expires_at=now + dt.timedelta(minutes=2)))

    try:
        plant("certificate:crashed", leases.this_node(), dead.pid)
        plant("certificate:running", leases.this_node(), alive.pid)
        plant("certificate:elsewhere", "another-boot/4026531836", dead.pid)  # another machine's PID
        leases.acquire(engine, "certificate:crashed", "certd issue")
        for name in ("certificate:running", "certificate:elsewhere"):
            with pytest.raises(leases.LeaseBusy):
                leases.acquire(engine, name, "certd issue")
    finally:
        alive.kill()
        alive.wait()
    assert leases.this_node() is not None  # Linux: the shortcut is really in play here


def test_of_many_racing_processes_exactly_one_gets_the_lease(engine: sa.Engine) -> None:
    start = threading.Barrier(8)
    won: list[str] = []
    refused: list[str] = []

    def contend(i: int) -> None:
        start.wait()
        try:
            leases.acquire(engine, "certificate:race", f"contender {i}")
            won.append(f"contender {i}")
        except leases.LeaseBusy as busy:
            refused.append(busy.purpose)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1 and len(refused) == 7
    assert set(refused) == set(won)  # every loser was told who won


def test_held_keeps_the_lease_alive_past_its_ttl_and_frees_it_after(engine: sa.Engine) -> None:
    ttl = dt.timedelta(seconds=0.6)
    with leases.held(engine, "job:trust-refresh", "certd run", ttl=ttl) as lease:
        time.sleep(1.5)  # two and a half TTLs: only the keeper thread keeps it
        with pytest.raises(leases.LeaseBusy):
            leases.acquire(engine, "job:trust-refresh", "certd run", ttl=ttl)
        assert not lease.lost.is_set()
    assert _row(engine, "job:trust-refresh") is None


def test_the_leases_migration_matches_the_model(engine: sa.Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    import certd.store.all_tables  # noqa: F401

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                SQLModel.metadata)
        heads = {r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))}
    assert "0007_leases" in heads
    assert [d for d in diff if "leases" in repr(d)] == []


def test_renew_and_issue_by_hand_wait_for_the_daemon_instead_of_ordering_twice(make_setup) -> None:
    """A daemon (here: its lease) is renewing `web`; the hand-run commands order nothing."""
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    daemon_lease = leases.acquire(setup.engine, leases.certificate_lease("web"), "certd run")

    for command in (("renew", "web"), ("issue", "web")):
        result = setup.cli(*command)
        assert result.returncode == leases.EX_TEMPFAIL, (command, result.stderr)
        assert "certificate:web is held by certd run on " in result.stderr, result.stderr
        assert "try again when it has finished" in result.stderr
    assert setup.attempts() == [] and setup.txt_records() == [] and setup.current("web") is None
    status = setup.cli("status")
    assert f"web: in progress: certd run on {leases.this_process()} since " in status.stdout, status.stdout
    row = json.loads(setup.cli("status", "--json").stdout)[0]
    assert row["in_progress"]["by"] == "certd run" and row["in_progress"]["on"] == leases.this_process()

    # The daemon's own check sees a hand-run command's lease the same way and looks again soon.
    maintainer = Maintainer(setup.config, setup.engine)
    before = dt.datetime.now(dt.timezone.utc)
    result = maintainer.check("web")
    assert result.action == "busy" and "held by certd run" in result.reason
    assert before < result.next_check <= before + dt.timedelta(minutes=1, seconds=5)
    assert setup.attempts() == []

    leases.release(setup.engine, daemon_lease)
    result = setup.cli("renew", "web")
    assert result.returncode == 0, result.stderr
    assert setup.current("web") is not None and _row(setup.engine, "certificate:web") is None
    assert json.loads(setup.cli("status", "--json").stdout)[0]["in_progress"] is None
    # The certificate renewed a moment ago is not due: `certd issue` without --force leaves it.
    result = setup.cli("issue", "web")
    assert result.returncode == 0 and "not due" in result.stdout, result.stdout
    assert len(setup.attempts()) == 1


def test_records_of_a_crashed_nodes_order_are_removed_once_its_lease_expires(make_setup) -> None:
    from certd.runtime.jobs import CHALLENGE_CLEANUP_INTERVAL
    from certd.dns.challenges import Dns01Records, cleanup_leftover_records
    from certd.dns.registry import open_dns
    from certd.store.db import session_scope
    from certd.store.models import ChallengeRecord, IssuanceAttempt
    from tests.daemon.conftest import run, running_daemon

    setup = make_setup(cert_toml("web", ["local.example.com"]))
    dns = open_dns(setup.config)
    # Another node was mid-order for `web`: its attempt, its TXT record, its lease (2 s left).
    with session_scope(setup.engine) as session:
        attempt = IssuanceAttempt(name="web")
        session.add(attempt)
        session.flush()
        attempt_id = attempt.id
    Dns01Records(dns, setup.engine, attempt_id).present("_acme-challenge.local.example.com", "v" * 43)
    now = dt.datetime.now(dt.timezone.utc)
    with setup.engine.begin() as conn:
        conn.execute(sa.insert(leases.Lease.__table__).values(  # type: ignore[attr-defined]
            name="certificate:web", holder="node-b pid 4242", purpose="certd run", token="b",
            node="another-boot/4026531836", pid=4242, acquired_at=now,
            expires_at=now + dt.timedelta(seconds=2)))

    assert cleanup_leftover_records(dns, setup.engine, "certd run") == 0  # it may still be alive
    assert len(setup.txt_records()) == 1
    time.sleep(2.2)
    assert cleanup_leftover_records(dns, setup.engine, "certd run") == 1  # its lease ran out
    assert setup.txt_records() == []
    with session_scope(setup.engine) as session:
        assert session.exec(sa.select(ChallengeRecord)).all() == []

    async def scenario() -> None:  # a running daemon looks again on its own
        async with running_daemon(setup) as daemon:
            job = daemon._scheduler.get_job("challenge-cleanup")
            assert job is not None and job.trigger.interval == dt.timedelta(seconds=CHALLENGE_CLEANUP_INTERVAL)

    run(scenario())


def test_a_holder_is_named_by_its_node_as_well_as_host_and_pid(engine: sa.Engine,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import socket

    from certd.config.node import NODE_NAME_ENV

    monkeypatch.delenv(NODE_NAME_ENV, raising=False)
    monkeypatch.setattr(leases, "_node_name", None)
    host, pid = socket.gethostname(), os.getpid()
    assert leases.this_process() == f"{host} pid {pid}"  # no node name of its own
    leases.name_this_node(host)
    assert leases.this_process() == f"{host} pid {pid}"  # the host name as node name: said once
    leases.name_this_node("node-a")
    assert leases.this_process() == f"node node-a (host {host}, pid {pid})"
    leases.acquire(engine, "certificate:web", "certd run")
    with pytest.raises(leases.LeaseBusy) as busy:
        leases.acquire(engine, "certificate:web", "certd renew")
    assert f"certificate:web is held by certd run on node node-a (host {host}, pid {pid}) since " in str(busy.value)
    assert _row(engine, "certificate:web").holder == f"node node-a (host {host}, pid {pid})"
    leases.name_this_node(None)
    monkeypatch.setenv(NODE_NAME_ENV, "box-w2")  # a worker process: named by its supervisor
    assert leases.this_process() == f"node box-w2 (host {host}, pid {pid})"


HOLD = """
import argparse, sys, time
from certd.cli import context
from certd.store import leases

config = context.load(argparse.Namespace(config=sys.argv[1]))
leases.acquire(context.open_store(config), "certificate:web", "certd run")
print("held", flush=True)
time.sleep(120)
"""


def test_a_holder_that_is_pid_1_of_its_namespace_is_named_by_its_node(make_setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Inside a container every daemon is pid 1 of the same host name: `[node] name` tells them apart."""
    import shutil
    import socket
    import subprocess
    import sys

    from tests.conftest import missing_part

    if shutil.which("unshare") is None:
        missing_part("no unshare (util-linux) to start a process in a PID namespace of its own")
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    node_b = tmp_path / "node-b.toml"
    node_b.write_text(setup.config_path.read_text() + '\n[node]\nname = "node-b"\n')
    holder = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                               sys.executable, "-c", HOLD, str(node_b)],
                              env=setup.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held", holder.stderr
        result = setup.cli("issue", "web")
        assert result.returncode == leases.EX_TEMPFAIL, result.stderr
        assert (f"certificate:web is held by certd run on node node-b (host {socket.gethostname()}, pid 1) "
                "since ") in result.stderr, result.stderr
        status = setup.cli("status")
        assert f"web: in progress: certd run on node node-b (host {socket.gethostname()}, pid 1)" in status.stdout
    finally:
        holder.kill()
        holder.wait(10)
    assert setup.attempts() == []
