"""Hear at once what another node changed in the store: PostgreSQL LISTEN/NOTIFY.

The store's triggers (migration 0008_nodes) and `leases.release` send small JSON
payloads on channel `certd` when a certificate's current issuance, a bundle version,
a charger's enabled/approved state, a rollover gate or a routed charger call changes.
This listener holds one connection of its own (psycopg's blocking API, so a thread,
the way certd runs every synchronous library) and hands each payload to the event
loop. Notifications sent while it is disconnected are lost by design of NOTIFY: after
every (re)connection `on_connected` runs, and the caller compares the store with what
it serves (the same comparison its periodic safety-net check makes).

A dead server or a cut network is noticed by libpq keepalives (certd.store.pg) and a
`SELECT 1` every few seconds; then the thread reconnects with a growing pause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

from certd.store.pg import keepalive_args

log = logging.getLogger("certd.nodes")

CHANNEL = "certd"
PING_EVERY = 5.0  # seconds between liveness queries on an idle connection
MAX_PAUSE = 5.0  # longest pause between reconnection attempts

Event = dict[str, Any]


def conninfo(database_url: str) -> tuple[str, dict[str, object]]:
    """A libpq URI and keepalive parameters for the store's SQLAlchemy URL."""
    url = make_url(database_url)
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return plain, keepalive_args(url.query)


def parse(payload: str) -> Event | None:
    """A notification's payload, or None for one certd did not send (never raises)."""
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("k"), str) else None


class NotifyListener:
    """Calls `on_event(event)` and, after each (re)connection, `on_connected()`, on `loop`."""

    def __init__(self, database_url: str, loop: asyncio.AbstractEventLoop,
                 on_event: Callable[[Event], None], on_connected: Callable[[], None]) -> None:
        self._url = database_url
        self._loop = loop
        self._on_event = on_event
        self._on_connected = on_connected
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.connections = 0  # how many times it (re)connected: tests, `certd nodes`

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="certd-notify-listener", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _to_loop(self, func: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(func, *args)
        except RuntimeError:  # the loop closed: the daemon is gone
            self._stop.set()

    def _run(self) -> None:
        pause = 0.2
        while not self._stop.is_set():
            try:
                self._listen()
                pause = 0.2
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                if self.connected.is_set():
                    log.warning("lost the store's notification connection (%s); reconnecting",
                                type(exc).__name__)
                else:
                    log.debug("notification connection failed: %s", exc)
            self.connected.clear()
            if self._stop.wait(pause):
                return
            pause = min(pause * 2, MAX_PAUSE)

    def _listen(self) -> None:
        import psycopg

        dsn, extra = conninfo(self._url)
        with psycopg.connect(dsn, autocommit=True, **extra) as conn:  # type: ignore[arg-type]
            conn.execute(f"LISTEN {CHANNEL}")
            self.connections += 1
            self.connected.set()
            if self.connections > 1:
                log.info("notification connection to the store re-established")
            self._to_loop(self._on_connected)
            last_ping = time.monotonic()
            while not self._stop.is_set():
                for note in conn.notifies(timeout=0.5):
                    event = parse(note.payload)
                    if event is not None:
                        self._to_loop(self._on_event, event)
                if time.monotonic() - last_ping >= PING_EVERY:
                    conn.execute("SELECT 1")
                    last_ping = time.monotonic()
