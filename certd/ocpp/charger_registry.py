"""Charger registry operations on the store.

Plain functions are synchronous (SQLAlchemy): the OCPP server calls them in a
worker thread. `RegistryWriter` batches the high-rate updates (connected,
disconnected, last seen, boot info) into one transaction per flush, so 5,000
chargers heartbeating do not mean 1,000 commits a second.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlmodel import select

from certd.store.chargers import (
    REGISTRATION_ACCEPTED,
    REGISTRATION_PENDING,
    Charger,
    ChargerAuditEvent,
)
from certd.store.db import session_scope
from certd.store.types import utcnow
from certd.tasks import cancel_and_wait

log = logging.getLogger("certd.ocpp.registry")
audit_log = logging.getLogger("certd.audit")

__all__ = [
    "REGISTRATION_ACCEPTED", "REGISTRATION_PENDING", "ChargerRecord", "RegistryWriter",
    "lookup", "insert_charger", "remove_charger", "set_password_hash", "list_chargers",
    "clear_node", "record_audit", "UnwrittenRows", "write_in_thread",
]


T = TypeVar("T")


class ChargerExists(Exception):
    pass


# Batch writes run here, not in the loop's default executor: that one's few threads (cpu + 4)
# serve the handshakes' registry reads and argon2 checks, which a write held for tens of
# milliseconds (commit, fsync) would queue behind. Store writes are serialized anyway.
_STORE_WRITER = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                      thread_name_prefix="certd-store-writer")


async def write_in_thread(write: Callable[..., T], *args: Any) -> tuple[asyncio.Future[T], bool]:
    """Run a store write in the writer thread; wait for its outcome even when cancelled meanwhile.

    A thread cannot be stopped: a batch it may have committed must not be put back and written
    twice (audit events, first-contact rows). Returns the settled future and whether a
    cancellation arrived, for the caller to re-raise once the batch is accounted for.
    """
    future = asyncio.get_running_loop().run_in_executor(_STORE_WRITER, write, *args)
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    return future, cancelled


@dataclass(frozen=True)
class ChargerRecord:
    """What the server needs to decide about one connection (a detached snapshot)."""

    charger_id: str
    enabled: bool
    registration: str
    password_hash: str | None
    heartbeat_class: str


def _record(row: Charger) -> ChargerRecord:
    return ChargerRecord(
        charger_id=row.charger_id,
        enabled=row.enabled,
        registration=row.registration,
        password_hash=row.password_hash,
        heartbeat_class=row.heartbeat_class,
    )


_CHARGERS = Charger.__table__  # type: ignore[attr-defined]
# Built once: constructing the statement cost as much as running it.
_LOOKUP = sa.select(_CHARGERS.c.charger_id, _CHARGERS.c.enabled, _CHARGERS.c.registration,
                    _CHARGERS.c.password_hash, _CHARGERS.c.heartbeat_class
                    ).where(_CHARGERS.c.charger_id == sa.bindparam("charger_id"))


def lookup(engine: sa.Engine, charger_id: str) -> ChargerRecord | None:
    """One indexed read per connection attempt (Core, not the ORM: it runs 200 times a second)."""
    with engine.connect() as conn:
        row = conn.execute(_LOOKUP, {"charger_id": charger_id}).first()
    return ChargerRecord(*row) if row else None


def insert_charger(
    engine: sa.Engine,
    charger_id: str,
    *,
    password_hash: str | None,
    heartbeat_class: str,
    registration: str = REGISTRATION_ACCEPTED,
    enabled: bool = True,
    if_absent: bool = False,
) -> ChargerRecord:
    """Add a charger; raises ChargerExists unless `if_absent` (then the existing row is returned)."""
    try:
        with session_scope(engine) as session:
            existing = session.get(Charger, charger_id)
            if existing is not None:
                if if_absent:
                    return _record(existing)
                raise ChargerExists(charger_id)
            row = Charger(
                charger_id=charger_id, enabled=enabled, registration=registration,
                password_hash=password_hash, heartbeat_class=heartbeat_class,
            )
            session.add(row)
            session.flush()
            return _record(row)
    except sa.exc.IntegrityError:
        # Another connection or node inserted the same id between our read and write.
        if not if_absent:
            raise ChargerExists(charger_id) from None
        found = lookup(engine, charger_id)
        if found is None:
            raise
        return found


def update_charger(engine: sa.Engine, charger_id: str, **values: object) -> bool:
    """Set columns of one charger; False if it does not exist."""
    with session_scope(engine) as session:
        row = session.get(Charger, charger_id)
        if row is None:
            return False
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        return True


def set_password_hash(engine: sa.Engine, charger_id: str, password_hash: str | None) -> bool:
    return update_charger(engine, charger_id, password_hash=password_hash)


def remove_charger(engine: sa.Engine, charger_id: str) -> bool:
    with session_scope(engine) as session:
        row = session.get(Charger, charger_id)
        if row is None:
            return False
        session.delete(row)
        return True


def list_chargers(engine: sa.Engine) -> list[Charger]:
    with session_scope(engine) as session:
        return list(session.exec(select(Charger).order_by(Charger.charger_id)))


def clear_node(engine: sa.Engine, node: str) -> int:
    """Mark every charger this node held as offline (after a crash or at shutdown)."""
    table = Charger.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        result = session.execute(
            sa.update(table)
            .where(table.c.connected_node == node)
            .values(connected_node=None, connected_since=None)
        )
        return int(result.rowcount or 0)


def record_audit(
    engine: sa.Engine, kind: str, charger_id: str | None, address: str | None, detail: str | None
) -> None:
    with session_scope(engine) as session:
        session.add(ChargerAuditEvent(kind=kind, charger_id=charger_id, address=address, detail=detail))


class UnwrittenRows(Protocol):
    """Charger rows admitted but not yet in the store (certd.ocpp.first_contact)."""

    async def flush(self) -> None: ...

    def pending(self, charger_id: str) -> ChargerRecord | None: ...


@dataclass
class _Pending:
    """Coalesced changes for one charger since the last flush (latest value wins)."""

    connected: bool | None = None  # True: connected now; False: disconnected
    connected_since: dt.datetime | None = None
    version: str | None = None
    address: str | None = None
    last_seen: dt.datetime | None = None
    boot: dict[str, str | None] = field(default_factory=dict)

    def merged_with(self, newer: _Pending) -> _Pending:
        """This (older, unwritten) entry with `newer`'s changes on top, field by field.

        A heartbeat queued while a connect failed to write must not drop the connect.
        """
        merged = _Pending(
            connected=self.connected, connected_since=self.connected_since,
            version=self.version, address=self.address,
            last_seen=newer.last_seen or self.last_seen,
            boot={**self.boot, **newer.boot},
        )
        if newer.connected is not None:  # connected and its since are one change
            merged.connected, merged.connected_since = newer.connected, newer.connected_since
        if newer.version is not None:  # so are version and address
            merged.version, merged.address = newer.version, newer.address
        return merged


class RegistryWriter:
    """Collects charger state changes on the loop; writes them in batches from a worker thread."""

    # last_seen alone is written at most this often per charger (connect/boot/disconnect at once).
    SEEN_RESOLUTION = dt.timedelta(seconds=15)

    def __init__(
        self,
        engine: sa.Engine,
        node: str,
        flush_interval: float = 0.5,
        clock: Callable[[], dt.datetime] = utcnow,
        first_contact: UnwrittenRows | None = None,
        write_lock: asyncio.Lock | None = None,
    ) -> None:
        self.engine = engine
        self.node = node
        self.flush_interval = flush_interval
        self.clock = clock
        # Rows of chargers seen for the first time, written before the updates that need them.
        self.first_contact = first_contact
        # Shared with the store's other batch writer, so that neither waits on SQLite's write
        # lock (its busy handler sleeps in steps of up to 100 ms).
        self.write_lock = write_lock or asyncio.Lock()
        self._pending: dict[str, _Pending] = {}
        self._audit: list[dict[str, object]] = []
        self._seen_written: dict[str, dt.datetime] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    # -- producers (loop thread, cheap) --

    def _entry(self, charger_id: str) -> _Pending:
        entry = self._pending.get(charger_id)
        if entry is None:
            entry = self._pending[charger_id] = _Pending()
        return entry

    def connected(self, charger_id: str, version: str, address: str | None) -> None:
        now = self.clock()
        entry = self._entry(charger_id)
        entry.connected, entry.connected_since = True, now
        entry.version, entry.address, entry.last_seen = version, address, now
        self._wake.set()

    def disconnected(self, charger_id: str) -> None:
        entry = self._entry(charger_id)
        entry.connected, entry.connected_since = False, None
        entry.last_seen = self.clock()
        self._wake.set()

    def seen(self, charger_id: str) -> None:
        now = self.clock()
        written = self._seen_written.get(charger_id)
        entry = self._pending.get(charger_id)
        if entry is None and written is not None and now - written < self.SEEN_RESOLUTION:
            return
        self._entry(charger_id).last_seen = now

    def boot(self, charger_id: str, **info: str | None) -> None:
        entry = self._entry(charger_id)
        entry.boot.update(info)
        entry.last_seen = self.clock()
        self._wake.set()

    def audit(self, kind: str, charger_id: str | None, address: str | None, detail: str | None) -> None:
        audit_log.warning("%s charger=%s address=%s %s", kind, charger_id, address, detail or "")
        self._audit.append({
            "at": self.clock(), "kind": kind, "charger_id": charger_id,
            "address": address, "detail": detail,
        })
        self._wake.set()

    # -- flushing --

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="certd-registry-writer")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.flush_interval)  # gather a batch; not a wait for an outside event
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing charger state to the store failed; will retry")

    async def flush(self) -> None:
        async with self._flush_lock:
            if self.first_contact is not None:
                await self.first_contact.flush()
            pending, self._pending = self._pending, {}
            if self.first_contact is not None:
                # Rows queued while that write ran are not in the store yet: an update now would
                # match nothing, so theirs wait for the next flush.
                for charger_id in [c for c in pending if self.first_contact.pending(c)]:
                    self._pending[charger_id] = pending.pop(charger_id)
                    self._wake.set()
            audit, self._audit = self._audit, []
            if not pending and not audit:
                return
            async with self.write_lock:
                write, cancelled = await write_in_thread(self._write, pending, audit)
            error = write.exception()
            if error is not None:
                # Put the batch back (newer changes taking precedence) so nothing is lost.
                for charger_id, entry in pending.items():
                    newer = self._pending.get(charger_id)
                    self._pending[charger_id] = entry if newer is None else entry.merged_with(newer)
                self._audit[:0] = audit
            else:
                for charger_id, entry in pending.items():
                    if entry.last_seen is not None:
                        self._seen_written[charger_id] = entry.last_seen
                    if entry.connected is False:
                        self._seen_written.pop(charger_id, None)
            if cancelled:
                raise asyncio.CancelledError
            if error is not None:
                raise error

    def _write(self, pending: dict[str, _Pending], audit: list[dict[str, object]]) -> None:
        """One transaction; rows with the same set of changed columns share one executemany."""
        table = Charger.__table__  # type: ignore[attr-defined]
        now = self.clock()
        groups: dict[tuple[tuple[str, ...], bool], list[dict[str, object]]] = {}
        for charger_id, entry in pending.items():
            values: dict[str, object] = {}
            if entry.version is not None:
                values.update(ocpp_version=entry.version, last_address=entry.address)
            if entry.connected is True:
                values.update(connected_node=self.node, connected_since=entry.connected_since)
            elif entry.connected is False:
                values.update(connected_node=None, connected_since=None)
            values.update(entry.boot)
            if values:
                values["updated_at"] = now
            if entry.last_seen is not None:
                values["last_seen"] = entry.last_seen
            if not values:
                continue
            shape = (tuple(sorted(values)), entry.connected is False)
            groups.setdefault(shape, []).append(
                {"b_id": charger_id, **{f"b_{key}": value for key, value in values.items()}})
        with session_scope(self.engine) as session:
            for (columns, disconnecting), rows in groups.items():
                assignments: dict[str, object] = {c: sa.bindparam(f"b_{c}") for c in columns}
                if "last_seen" in columns and len(columns) > 1:
                    assignments["first_seen"] = sa.func.coalesce(
                        table.c.first_seen, sa.bindparam("b_last_seen"))
                stmt = sa.update(table).where(table.c.charger_id == sa.bindparam("b_id"))
                if disconnecting:
                    # Do not mark offline a charger that meanwhile connected to another node.
                    stmt = stmt.where(sa.or_(table.c.connected_node == self.node,
                                             table.c.connected_node.is_(None)))
                session.execute(stmt.values(assignments), rows)
            if audit:
                session.execute(sa.insert(ChargerAuditEvent.__table__), audit)  # type: ignore[attr-defined]

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.flush()
