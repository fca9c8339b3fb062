"""Leases in the store: at most one certd process works on a thing at a time.

A hand-run `certd renew` or `certd issue` next to a running `certd run`, or
several daemons sharing one PostgreSQL store, must never order the same
certificate twice (rate limits, two TXT records racing, two deploys writing the
same files) nor run a gray-cloud DNS sync or a bundle refresh twice at once
(fleet registry deliveries are claimed row by row in certd.trust.outbox). The lease is a
row: who holds it, for what, until when. It lives in the store and not in a
process because the processes that compete share nothing else.

Taking a lease is a compare-and-swap on a random token, so it works the same on
SQLite and PostgreSQL without row locks or advisory locks. The holder keeps it
alive from a background thread; a holder that dies (SIGKILL, power loss) frees
it when it expires, or at once for a process on the same machine that is
provably gone (same kernel boot and PID namespace, PID no longer running), so
`certd issue` after a crash need not wait. Times come from each node's clock:
the TTL is minutes, so nodes need clocks that agree to within seconds (NTP), as
TLS needs anyway.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from certd.config.node import NODE_NAME_ENV
from certd.errors import CertdError
from certd.store.types import UTCDateTime, utcnow

log = logging.getLogger(__name__)

DEFAULT_TTL = dt.timedelta(minutes=2)
# PostgreSQL (several nodes): renewed every CLUSTER_TTL / 4; a dead holder's lease is free after it.
CLUSTER_TTL = dt.timedelta(seconds=10)
EX_TEMPFAIL = 75  # sysexits.h: a temporary failure, try again later
# The holder stops treating a lease as its own this share of the TTL after its last renewal
# (measured from when the renewal was sent), before any other node may take it over.
_SAFE_SHARE = 0.8
def ttl_for(engine: sa.Engine) -> dt.timedelta:
    """Short on PostgreSQL, where other nodes wait for a dead holder; today's 2 min on SQLite."""
    return CLUSTER_TTL if engine.dialect.name == "postgresql" else DEFAULT_TTL


class Lease(SQLModel, table=True):
    __tablename__ = "leases"

    name: str = Field(primary_key=True)  # "certificate:NAME", "job:dns-sync", ...
    holder: str  # "node node-a (host box, pid 1)" or "box pid 1234": for messages only
    purpose: str  # "certd run", "certd issue": for messages only
    token: str  # random per acquisition: the compare-and-swap value
    node: str | None = None  # kernel boot id + PID namespace: where `pid` means something
    pid: int | None = None
    acquired_at: dt.datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    expires_at: dt.datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class LeaseLost(CertdError):
    """This process held the lease, but another one took it over: it must not write results."""

    exit_code = EX_TEMPFAIL

    def __init__(self, name: str):
        self.lease_name = name
        super().__init__(f"{name}: the lease was taken over by another certd process (this one could "
                         "not renew it in time); its work here stops and nothing of it is written")


class LeaseBusy(CertdError):
    """Another certd process holds the lease; the caller should try again later."""

    exit_code = EX_TEMPFAIL

    def __init__(self, name: str, holder: str, purpose: str, since: dt.datetime, expires_at: dt.datetime):
        self.lease_name, self.holder, self.purpose = name, holder, purpose
        self.since, self.expires_at = since, expires_at
        super().__init__(
            f"{name} is held by {purpose} on {holder} since {_fmt(since)} (the lease runs until "
            f"{_fmt(expires_at)} unless renewed); try again when it has finished")


@dataclass
class HeldLease:
    """A lease this process holds; `lost` is set if the keeper could not renew it.

    `taken_over` names the holder whose lease this one replaced (a process that is gone, or
    one whose lease expired): whatever it was doing was interrupted, and its leftovers (TXT
    records of an order) are the new holder's to clean up first.
    """

    name: str
    token: str
    lost: threading.Event
    taken_over: str | None = None

    @property
    def fence(self) -> Fence:
        return Fence(self.name, self.token)


@dataclass(frozen=True)
class Fence:
    """Proof of holding a lease, checked inside the transaction that writes a result."""

    name: str
    token: str

    def verify(self, conn: sa.Connection) -> None:
        """Raise LeaseLost unless the lease is still ours; on PostgreSQL the row stays share-locked
        until `conn`'s transaction ends, so nobody can take it over before this write commits."""
        table = Lease.__table__  # type: ignore[attr-defined]
        query = sa.select(table.c.token).where(table.c.name == self.name)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(read=True)
        token = conn.execute(query).scalar()
        if token != self.token:
            raise LeaseLost(self.name)

    def check(self, engine: sa.Engine) -> None:
        """`verify` in a transaction of its own: before a side effect outside the store."""
        with engine.begin() as conn:
            self.verify(conn)


_node_name: str | None = None


def name_this_node(name: str | None) -> None:
    """The node name (`[node] name`, as `certd nodes` lists it) this process's leases are held
    under: set once the config is loaded. In a container or PID namespace every daemon may be
    "pid 1" on the same host name; the node name is what tells an operator which one it is."""
    global _node_name
    _node_name = name


def this_process() -> str:
    """Who holds a lease, for messages: the node name, the host and the PID. Without a node name of
    its own (none set, $CERTD_NODE_NAME unset, or the host name itself) just "host pid N"."""
    host, pid = socket.gethostname(), os.getpid()
    name = _node_name or os.environ.get(NODE_NAME_ENV)
    if name and name != host:
        return f"node {name} (host {host}, pid {pid})"
    return f"{host} pid {pid}"


@functools.cache
def this_node() -> str | None:
    """The kernel boot and PID namespace this process lives in (Linux); None elsewhere, where a
    lease is only ever freed by its expiry."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot_id}/{pid_namespace}"


def _holder_gone(row: sa.Row) -> bool:  # type: ignore[type-arg]
    """The holder ran in this very PID namespace and its PID no longer runs. (A reused PID only
    makes us wait for the expiry: never the reverse.)"""
    import psutil

    node = this_node()
    return (node is not None and row.node == node and row.pid is not None
            and row.pid != os.getpid() and not psutil.pid_exists(row.pid))


def acquire(engine: sa.Engine, name: str, purpose: str, *, ttl: dt.timedelta | None = None,
            clock: Callable[[], dt.datetime] = utcnow) -> HeldLease:
    """Take the lease `name` or raise LeaseBusy naming who has it. Never waits."""
    table = Lease.__table__  # type: ignore[attr-defined]
    ttl = ttl or ttl_for(engine)
    mine = {"holder": this_process(), "purpose": purpose, "node": this_node(), "pid": os.getpid()}
    for _ in range(5):  # only lost races loop; each round reads the row again
        token = secrets.token_hex(16)
        now = clock()
        with engine.begin() as conn:
            row = conn.execute(sa.select(table).where(table.c.name == name)).first()
        if row is None:
            try:
                with engine.begin() as conn:
                    conn.execute(sa.insert(table).values(name=name, token=token, acquired_at=now,
                                                         expires_at=now + ttl, **mine))
            except sa.exc.IntegrityError:
                continue  # somebody inserted it first: read again
            return HeldLease(name, token, threading.Event())
        gone = row.expires_at > now and _holder_gone(row)
        if row.expires_at > now and not gone:
            raise LeaseBusy(name, row.holder, row.purpose, row.acquired_at, row.expires_at)
        with engine.begin() as conn:
            taken = conn.execute(
                sa.update(table).where(table.c.name == name, table.c.token == row.token)
                .values(token=token, acquired_at=now, expires_at=now + ttl, **mine)
            ).rowcount
        if taken == 1:
            why = "a process that is gone" if gone else f"which expired at {_fmt(row.expires_at)}"
            log.info("%s: took over the lease of %s on %s, %s", name, row.purpose, row.holder, why)
            return HeldLease(name, token, threading.Event(), taken_over=f"{row.purpose} on {row.holder}")
    raise CertdError(f"{name}: could not take the lease: other processes kept changing it")


def renew(engine: sa.Engine, lease: HeldLease, *, ttl: dt.timedelta | None = None,
          clock: Callable[[], dt.datetime] = utcnow) -> bool:
    """Push the expiry out; False when the lease is no longer ours."""
    table = Lease.__table__  # type: ignore[attr-defined]
    ttl = ttl or ttl_for(engine)
    with engine.begin() as conn:
        return conn.execute(
            sa.update(table).where(table.c.name == lease.name, table.c.token == lease.token)
            .values(expires_at=clock() + ttl)
        ).rowcount == 1


def release(engine: sa.Engine, lease: HeldLease) -> None:
    """Free the lease if it is still ours; on PostgreSQL the other nodes hear of it (NOTIFY), so
    one that found it busy looks again at once instead of at its expiry."""
    table = Lease.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        freed = conn.execute(sa.delete(table).where(table.c.name == lease.name, table.c.token == lease.token))
        if freed.rowcount == 1 and conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_notify("certd", json.dumps({"k": "lease", "name": lease.name}))))


@contextmanager
def held(engine: sa.Engine, name: str, purpose: str, *, ttl: dt.timedelta | None = None,
         clock: Callable[[], dt.datetime] = utcnow) -> Iterator[HeldLease]:
    """Hold `name` for the block (raises LeaseBusy before it runs), renewed every third of the TTL
    (every quarter on PostgreSQL). `lease.lost` is set once it is no longer safely ours: another
    process took it, or no renewal got through for most of the TTL (the store is unreachable)."""
    ttl = ttl or ttl_for(engine)
    lease = acquire(engine, name, purpose, ttl=ttl, clock=clock)
    done = threading.Event()
    keeper = threading.Thread(target=_keep, args=(engine, lease, ttl, clock, done),
                              name=f"certd-lease {name}", daemon=True)
    keeper.start()
    try:
        yield lease
    finally:
        done.set()
        keeper.join()
        try:
            release(engine, lease)
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            log.warning("%s: could not release the lease (it expires by itself): %s", name, exc)


def _keep(engine: sa.Engine, lease: HeldLease, ttl: dt.timedelta, clock: Callable[[], dt.datetime],
          done: threading.Event) -> None:
    """Renew until `done`. Each renewal runs in a thread of its own, so a store that hangs (a cut
    network) cannot keep this loop from noticing that the lease ran out."""
    interval = ttl.total_seconds() / (4 if engine.dialect.name == "postgresql" else 3)
    safe_for = ttl.total_seconds() * _SAFE_SHARE
    last_ok = time.monotonic()  # when the last successful renewal was sent
    renewal: _Renewal | None = None
    while not done.wait(min(interval, 0.25)):
        now = time.monotonic()
        if renewal is not None and renewal.finished.is_set():
            if renewal.outcome is True:
                last_ok = renewal.sent
            elif renewal.outcome is False:
                log.error("%s: lease lost (it expired and another process took it)", lease.name)
                lease.lost.set()
                return
            else:
                log.error("%s: could not renew the lease: %s", lease.name, renewal.outcome)
            renewal = None
        if now - last_ok > safe_for:
            log.error("%s: lease lost: no renewal reached the store for %.0f s; this work stops",
                      lease.name, now - last_ok)
            lease.lost.set()
            return
        if renewal is None and now - last_ok >= interval:
            renewal = _Renewal(now)
            threading.Thread(target=renewal.run, args=(engine, lease, ttl, clock),
                             name=f"certd-lease-renew {lease.name}", daemon=True).start()


class _Renewal:
    """One renewal attempt running in its own thread."""

    def __init__(self, sent: float) -> None:
        self.sent = sent
        self.outcome: bool | Exception | None = None
        self.finished = threading.Event()

    def run(self, engine: sa.Engine, lease: HeldLease, ttl: dt.timedelta,
            clock: Callable[[], dt.datetime]) -> None:
        try:
            self.outcome = renew(engine, lease, ttl=ttl, clock=clock)
        except Exception as exc:  # noqa: BLE001 - the store is down: retried, then lost
            self.outcome = exc
        finally:
            self.finished.set()


class AnyEvent:
    """Set when any of the given events is: a shutdown or a lost lease cancels an order
    (duck-types the `threading.Event` an order waits on)."""

    def __init__(self, *events: threading.Event | None) -> None:
        self._events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            step = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if step <= 0:
                return False
            time.sleep(step)
        return True


def expired(engine: sa.Engine, now: dt.datetime, prefix: str = "") -> list[str]:
    """Leases whose holder stopped renewing them (a dead or cut-off process): work to take over."""
    table = Lease.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table.c.name).where(
            table.c.expires_at < now, table.c.name.startswith(prefix, autoescape=True))).scalars())


def certificate_lease(name: str) -> str:
    return f"certificate:{name}"


def job_lease(job: str) -> str:
    return f"job:{job}"


def _fmt(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
