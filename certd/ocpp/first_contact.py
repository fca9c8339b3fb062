"""First contact: chargers certd has never seen are admitted from memory and written in batches.

Under `unknown_chargers = "accept"` or `"register"` a charger's first connection creates its
row. Written in the handshake, that was two committed transactions (the row, the audit event),
each a WAL fsync, serialized on the store's write lock and queued behind the other handshakes'
reads and the state writer: at 200 new chargers/s the handshakes waited seconds. Here the
handshake only queues the row (on the loop, no I/O); a task writes what has queued with one
`INSERT ... ON CONFLICT DO NOTHING` and the `registered` audit events in one transaction from a
worker thread, at most every `min_interval` (sooner once `max_batch` rows wait): one commit
for however many chargers arrived meanwhile.

- Until its row is written, `pending()` answers for the id: a second connection with the same
  id is checked against the first password (trust on first use), and a `register`ed charger
  stays pending.
- A row is in the store within `min_interval` plus one write while the store answers; a failed
  write is retried with its rows kept. `RegistryWriter` has queued rows written before its
  updates and holds back the updates of rows queued meanwhile, so a charger's connect and boot
  info never precede its row. `close()` writes what is queued: a clean stop loses nothing.
- A crash loses the rows queued since the last write (at most `min_interval` of first contacts
  plus the batch being written). Those chargers were connected; at their next connection they
  are unknown again and register again, with the password they send then.
- Another node or an operator may create the same id's row between our lookup and our write:
  the stored row stands, and the connection admitted from ours is closed so that the charger
  logs in again against the stored row (`SupersededConnections`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from certd.ocpp.charger_registry import ChargerRecord, write_in_thread
from certd.store.chargers import Charger, ChargerAuditEvent
from certd.store.types import utcnow
from certd.tasks import cancel_and_wait

if TYPE_CHECKING:
    from certd.ocpp.auth import VerifiedCredentials
    from certd.ocpp.session import ChargerSession

log = logging.getLogger("certd.ocpp.registry")

_CHARGERS = Charger.__table__  # type: ignore[attr-defined]
_AUDIT = ChargerAuditEvent.__table__  # type: ignore[attr-defined]
# Seconds to wait after a failed write before the next try (the rows stay queued).
RETRY_DELAY = 1.0


@functools.cache
def _insert_new_rows(dialect: str) -> sa.Insert:
    """INSERT that skips ids already in the store and returns the ids it did insert (built once)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"first-contact rows on {dialect}: certd stores on SQLite or PostgreSQL")
    return (insert(_CHARGERS).on_conflict_do_nothing(index_elements=[_CHARGERS.c.charger_id])
            .returning(_CHARGERS.c.charger_id))


@dataclass(frozen=True)
class FirstContact:
    """One queued row: the record the handshake was admitted with, and where it came from."""

    record: ChargerRecord
    address: str | None
    at: dt.datetime  # created_at of the row: when the charger first connected
    queued: float  # monotonic, for the delay until the row is written


@dataclass
class RegistrarStats:
    batches: int = 0
    rows: int = 0
    lost: int = 0
    largest_batch: int = 0
    write_seconds: float = 0.0
    longest_delay: float = 0.0  # first connection -> row committed

    def as_dict(self) -> dict[str, float | int]:
        mean_ms = self.write_seconds / self.batches * 1000 if self.batches else 0.0
        return {"batches": self.batches, "rows": self.rows, "lost": self.lost,
                "largest_batch": self.largest_batch, "mean_write_ms": round(mean_ms, 2),
                "longest_delay_ms": round(self.longest_delay * 1000, 1)}


class FirstContactRegistrar:
    """Queues first-contact rows on the loop; writes them in batches from a worker thread."""

    def __init__(
        self,
        engine: sa.Engine,
        heartbeat_class: str,
        *,
        min_interval: float = 0.1,
        max_batch: int = 500,
        on_lost: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.heartbeat_class = heartbeat_class
        self.min_interval = min_interval
        self.max_batch = max_batch
        self.on_lost = on_lost
        self.clock = clock
        self.stats = RegistrarStats()
        self._queued: dict[str, FirstContact] = {}
        self._writing: dict[str, FirstContact] = {}
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self.write_lock = asyncio.Lock()  # give it to RegistryWriter: one store write at a time
        self._task: asyncio.Task[None] | None = None
        self._last_write = float("-inf")

    # -- the handshake (loop thread, no I/O) --

    def pending(self, charger_id: str) -> ChargerRecord | None:
        """The record of an id registered here whose row is not in the store yet."""
        entry = self._queued.get(charger_id) or self._writing.get(charger_id)
        return entry.record if entry else None

    def register(self, charger_id: str, registration: str, password_hash: str | None,
                 address: str | None) -> ChargerRecord:
        """Queue the row of a charger seen for the first time; the first registration of an id
        wins (a later one gets the first one's record, and so its password to check)."""
        existing = self.pending(charger_id)
        if existing is not None:
            return existing
        record = ChargerRecord(charger_id=charger_id, enabled=True, registration=registration,
                               password_hash=password_hash, heartbeat_class=self.heartbeat_class)
        self._queued[charger_id] = FirstContact(record, address, utcnow(), self.clock())
        self._wake.set()
        if len(self._queued) >= self.max_batch:
            self._full.set()
        return record

    # -- writing --

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="certd-first-contact")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            wait = self._last_write + self.min_interval - self.clock()
            if wait > 0 and not self._full.is_set():
                try:  # one write per interval, or sooner when a full batch waits
                    await asyncio.wait_for(self._full.wait(), wait)
                except TimeoutError:
                    pass
            try:
                await self.flush()
            except Exception:
                log.exception("writing %d first-contact charger row(s) to the store failed; "
                              "will retry", len(self._queued))
                await asyncio.sleep(RETRY_DELAY)

    async def flush(self) -> None:
        """Write every queued row now (one transaction); on failure they stay queued."""
        async with self._flush_lock:
            if not self._queued:
                self._wake.clear()
                return
            async with self.write_lock:  # rows queued while the state writer writes join in
                self._wake.clear()
                self._full.clear()
                batch, self._queued = self._queued, {}
                self._writing = batch
                self._last_write = self.clock()
                write, cancelled = await write_in_thread(self._write, list(batch.values()))
                self._writing = {}
            error = write.exception()
            if error is None:
                self._account(batch, write.result())
            else:
                self._queued = {**batch, **self._queued}  # keep them, in their order
                self._wake.set()
            if cancelled:
                raise asyncio.CancelledError
            if error is not None:
                raise error

    def _account(self, batch: dict[str, FirstContact], inserted: set[str]) -> None:
        now = self.clock()
        stats = self.stats
        stats.batches += 1
        stats.rows += len(inserted)
        stats.largest_batch = max(stats.largest_batch, len(batch))
        stats.write_seconds += now - self._last_write
        stats.longest_delay = max([stats.longest_delay, *(now - e.queued for e in batch.values())])
        for charger_id in batch.keys() - inserted:
            stats.lost += 1
            log.warning("charger %s: its row was created elsewhere (another node or an operator) "
                        "while it connected for the first time; the stored row stands", charger_id)
            if self.on_lost is not None:
                self.on_lost(charger_id)

    def _write(self, batch: list[FirstContact]) -> set[str]:
        """Worker thread: the rows that are new and their audit events, in one transaction."""
        rows = [{
            "charger_id": e.record.charger_id, "enabled": e.record.enabled,
            "registration": e.record.registration, "password_hash": e.record.password_hash,
            "heartbeat_class": e.record.heartbeat_class, "created_at": e.at, "updated_at": e.at,
        } for e in batch]
        with self.engine.begin() as conn:
            result = conn.execute(_insert_new_rows(self.engine.dialect.name), rows)
            inserted = {row[0] for row in result}
            audit = [{"at": e.at, "kind": "registered", "charger_id": e.record.charger_id,
                      "address": e.address,
                      "detail": f"unknown charger recorded as {e.record.registration}"}
                     for e in batch if e.record.charger_id in inserted]
            if audit:
                conn.execute(sa.insert(_AUDIT), audit)
        for e in batch:
            if e.record.charger_id in inserted:
                log.warning("unknown charger %s from %s recorded as %s", e.record.charger_id,
                            e.address, e.record.registration)
        return inserted

    async def close(self) -> None:
        """Stop the task and write what is queued."""
        await cancel_and_wait(self._task)
        self._task = None
        await self.flush()


class SupersededConnections:
    """Closes a connection admitted from a first-contact row that another writer beat.

    The charger then logs in again and is checked against the row in the store. A handshake
    still under way when the write found the conflict is closed once it connects (within
    `grace` seconds).
    """

    CLOSE_CODE = 1008  # policy violation: the admission no longer holds

    def __init__(self, sessions: dict[str, ChargerSession], credentials: VerifiedCredentials,
                 grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.sessions = sessions
        self.credentials = credentials
        self.grace = grace
        self.clock = clock
        self._connecting: dict[str, float] = {}  # id -> deadline
        self._closing: set[asyncio.Task[None]] = set()

    def __call__(self, charger_id: str) -> None:
        self.credentials.forget(charger_id)
        session = self.sessions.get(charger_id)
        if session is not None:
            self._close(session)
        else:
            self._connecting[charger_id] = self.clock() + self.grace

    def hook(self, session: ChargerSession, event: str) -> None:
        """A ChargerHook: closes a superseded connection whose handshake finished after the write."""
        if event != "connected" or not self._connecting:
            return
        now = self.clock()
        for charger_id, deadline in list(self._connecting.items()):
            if deadline < now:
                del self._connecting[charger_id]
        if self._connecting.pop(session.charger_id, None) is not None:
            self._close(session)

    def _close(self, session: ChargerSession) -> None:
        if session.charge_point is None:
            return
        connection = session.charge_point._connection  # noqa: SLF001 (the websocket)
        task = asyncio.get_running_loop().create_task(
            connection.close(self.CLOSE_CODE, "log in again: registration superseded"))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
