"""A worker of `certd run` as a node of a PostgreSQL store (SQLite: nothing here runs).

The supervisor is a full node (certd.runtime.cluster): it takes over leases, writes
new issuances to the target files, runs the hooks and cleans up after gone nodes.
A worker holds chargers, so it does for itself what a node does for its chargers:

- presence: its `node` row ("<node>-wK", `certd nodes` lists it) with a heartbeat
  every HEARTBEAT s, a clean stop recorded; chargers shown offline while it was
  stalled are shown on it again;
- NOTIFY: a new current issuance reloads its listeners and tells its rollover engine
  (the supervisor deploys the files); a gate change reloads the gated listener and
  kicks the engine; a new bundle version kicks the engine; a charger disabled or
  approved elsewhere is dropped or accepted here; a charger call routed to this
  worker (it holds the charger) is run here;
- safety net: after every (re)connection and every SAFETY_INTERVAL s, its listeners
  re-read the store, the engine is kicked and calls waiting for it are run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

import sqlalchemy as sa

from certd.config import Config
from certd.runtime import charger_calls, nodes
from certd.runtime.notify_listener import Event, NotifyListener
from certd.runtime.services import OcppServices
from certd.store import deploy_state
from certd.store.types import utcnow

log = logging.getLogger("certd.nodes")

SAFETY_INTERVAL = 30.0
_SOURCE = re.compile(r"^certificate (\S+) \(issued #(\d+)")


class WorkerNode:
    def __init__(self, name: str, config: Config, engine: sa.Engine, services: OcppServices,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.name = name
        self.config = config
        self.engine = engine
        self.services = services
        self.clock = clock
        self.listener: NotifyListener | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._last_beat: dt.datetime | None = None
        self._closing = False

    @staticmethod
    def wanted(engine: sa.Engine) -> bool:
        return engine.dialect.name == "postgresql"

    async def start(self) -> None:
        now = self.clock()
        await asyncio.to_thread(nodes.announce, self.engine, self.name, self.config.node.address, now)
        await asyncio.to_thread(charger_calls.fail_stale, self.engine, self.name, now)
        self.listener = NotifyListener(self.config.db_url, asyncio.get_running_loop(), self._on_event,
                                       lambda: self._spawn(self.resync(), "certd-worker-resync"))
        self.listener.start()
        self.services.after_reload = self.record_listeners
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="certd-worker-heartbeat")

    async def close(self) -> None:
        self._closing = True
        for task in [self._ticker, *self._tasks]:
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing anyway
                    pass
        if self.listener is not None:
            await asyncio.to_thread(self.listener.close)
        try:
            await asyncio.to_thread(nodes.leave, self.engine, self.name, self.clock())
        except Exception as exc:  # noqa: BLE001 - the others see it gone after gone_after
            log.warning("node %s: could not record its stop: %s", self.name, exc)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        if self._closing:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("node %s: %s failed", self.name, task.get_name(), exc_info=task.exception())

    def _on_event(self, event: Event) -> None:
        kind, name = event["k"], event.get("name")
        rollover = self.services.rollover
        if kind == "issued" and isinstance(name, str) and any(c.name == name for c in self.config.certificates):
            self._spawn(self.services.after_deploy(name), f"certd-worker-issued {name}")
        elif kind == "gate" and isinstance(name, str):
            self._spawn(self.services.reload(name), f"certd-worker-reload {name}")
            if rollover is not None:
                rollover.kick()
        elif kind == "bundle" and rollover is not None:
            rollover.kick()
        elif kind == "charger" and isinstance(event.get("id"), str):
            self._spawn(self._charger_changed(event["id"]), "certd-worker-charger")
        elif kind == "call" and event.get("node") == self.name:
            self._spawn(self._run_calls(), "certd-worker-calls")

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        last_safety = loop.time()
        gone_after = dt.timedelta(seconds=self.config.node.gone_after)
        while True:
            await asyncio.sleep(nodes.HEARTBEAT)
            try:
                now = self.clock()
                await asyncio.to_thread(nodes.heartbeat, self.engine, self.name, now)
                if self._last_beat is not None and now - self._last_beat > gone_after / 2:
                    await self._reclaim_chargers()  # stalled: the others may have taken it for gone
                self._last_beat = now
                if loop.time() - last_safety >= SAFETY_INTERVAL:
                    last_safety = loop.time()
                    await self.resync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store may be unreachable: next beat
                log.warning("node %s: heartbeat failed: %s", self.name, exc)

    async def resync(self) -> None:
        """The safety net: listeners re-read the store, the engine looks again, calls are run."""
        if self.services.rollover is not None:
            self.services.rollover.kick()
        await self.services.reload(None)
        await self._run_calls()
        await self._reclaim_chargers()

    async def record_listeners(self) -> None:
        """Which issuance each listener of this worker serves, for `certd nodes` / `certd status`."""
        endpoint = self.services.endpoint
        if endpoint is None:
            return
        served: dict[str, dict[str, int]] = {}
        for listener in endpoint.listeners:
            for item in endpoint.served(listener.label):
                match = _SOURCE.match(item.source)
                if match:
                    served.setdefault(match[1], {})[listener.label] = int(match[2])
        await asyncio.to_thread(deploy_state.record_listeners, self.engine, self.name, served)

    async def _reclaim_chargers(self) -> None:
        endpoint = self.services.endpoint
        live = list(endpoint.shared.sessions) if endpoint is not None else []
        if live:
            await asyncio.to_thread(nodes.reclaim_chargers, self.engine, self.name, live, self.clock())

    async def _charger_changed(self, charger_id: str) -> None:
        """Disabled elsewhere: drop its socket here; approved elsewhere: accepted here at once."""
        from certd.ocpp import charger_registry

        endpoint = self.services.endpoint
        session = endpoint.charger(charger_id) if endpoint is not None else None
        if session is None or session.charge_point is None:
            return
        record = await asyncio.to_thread(charger_registry.lookup, self.engine, charger_id)
        if record is None or not record.enabled:
            log.info("charger %s was %s: closing its connection to node %s", charger_id,
                     "removed" if record is None else "disabled", self.name)
            await session.charge_point._connection.close(1008, "charger disabled")  # noqa: SLF001
        elif record.registration != session.registration:
            session.registration = record.registration

    async def _run_calls(self) -> None:
        if self.services.endpoint is not None:
            await charger_calls.run_claimed(self.services.endpoint, self.engine, self.name)
