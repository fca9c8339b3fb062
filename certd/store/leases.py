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
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from certd.errors import CertdError
from certd.store.types import UTCDateTime, utcnow

log = logging.getLogger(__name__)

DEFAULT_TTL = dt.timedelta(minutes=2)
EX_TEMPFAIL = 75  # sysexits.h: a temporary failure, try again later


class Lease(SQLModel, table=True):
    __tablename__ = "leases"

    name: str = Field(primary_key=True)  # "certificate:NAME", "job:dns-sync", ...
    holder: str  # "host pid 1234": for messages only
    purpose: str  # "certd run", "certd issue": for messages only
    token: str  # random per acquisition: the compare-and-swap value
    node: str | None = None  # kernel boot id + PID namespace: where `pid` means something
    pid: int | None = None
    acquired_at: dt.datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    expires_at: dt.datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


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


def this_process() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


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


def acquire(engine: sa.Engine, name: str, purpose: str, *, ttl: dt.timedelta = DEFAULT_TTL,
            clock: Callable[[], dt.datetime] = utcnow) -> HeldLease:
    """Take the lease `name` or raise LeaseBusy naming who has it. Never waits."""
    table = Lease.__table__  # type: ignore[attr-defined]
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


def renew(engine: sa.Engine, lease: HeldLease, *, ttl: dt.timedelta = DEFAULT_TTL,
          clock: Callable[[], dt.datetime] = utcnow) -> bool:
    """Push the expiry out; False when the lease is no longer ours."""
    table = Lease.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        return conn.execute(
            sa.update(table).where(table.c.name == lease.name, table.c.token == lease.token)
            .values(expires_at=clock() + ttl)
        ).rowcount == 1


def release(engine: sa.Engine, lease: HeldLease) -> None:
    table = Lease.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.name == lease.name, table.c.token == lease.token))


@contextmanager
def held(engine: sa.Engine, name: str, purpose: str, *, ttl: dt.timedelta = DEFAULT_TTL,
         clock: Callable[[], dt.datetime] = utcnow) -> Iterator[HeldLease]:
    """Hold `name` for the block (raises LeaseBusy before it runs), renewed every third of the TTL."""
    lease = acquire(engine, name, purpose, ttl=ttl, clock=clock)
    done = threading.Event()

    def keep() -> None:
        while not done.wait(ttl.total_seconds() / 3):
            try:
                if renew(engine, lease, ttl=ttl, clock=clock):
                    continue
                log.error("%s: lease lost (it expired and another process took it)", name)
            except Exception as exc:  # noqa: BLE001 - the store is down: the work goes on, say so
                log.error("%s: could not renew the lease: %s", name, exc)
                continue
            lease.lost.set()
            return

    keeper = threading.Thread(target=keep, name=f"certd-lease {name}", daemon=True)
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


def certificate_lease(name: str) -> str:
    return f"certificate:{name}"


def job_lease(job: str) -> str:
    return f"job:{job}"


def _fmt(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
