"""What every node of a PostgreSQL store does, a full node or an OCPP worker.

Two kinds of process are nodes: `certd run` (certd.runtime.cluster: it also deploys
files, runs hooks and takes over work left by stopped nodes) and each OCPP worker
of `[ocpp] workers` (certd.runtime.worker_node: it only serves). Both hold
chargers, so both do what this base does; the subclasses add what differs:

- presence: the node's `node` row, a heartbeat every HEARTBEAT s, a clean stop
  recorded; chargers shown offline while it was stalled are shown on it again;
- NOTIFY (certd.runtime.notify_listener): a gate change reloads the gated listener
  and kicks the rollover engine; a new bundle version kicks the engine; a charger
  disabled elsewhere is dropped here; one approved elsewhere while connected here as
  pending is asked for a BootNotification at once (answered Accepted); a charger call
  addressed to this node is run (certd.runtime.charger_calls); a new issuance and
  a freed lease are the subclass's (`_on_issued`, `_on_lease_freed`);
- safety net: after every (re)connection of the listener and every
  `[node] resync_interval` seconds, `resync`: what the subclass catches up on (`_catch_up`), then the
  listeners re-read the store, the engine is kicked, waiting calls are run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from certd.runtime import charger_calls, nodes
from certd.runtime.notify_listener import Event, NotifyListener
from certd.store import deploy_state
from certd.store.chargers import REGISTRATION_ACCEPTED, REGISTRATION_PENDING
from certd.tasks import cancel_all

if TYPE_CHECKING:
    from certd.config import Config
    from certd.ocpp.session import ChargerSession
    from certd.runtime.services import OcppServices

log = logging.getLogger("certd.nodes")

_SOURCE = re.compile(r"^certificate (\S+) \(issued #(\d+)")


class StoreNode(ABC):
    """One node of the store (see the module docstring); started after the node's services."""

    TASK_PREFIX = "certd-node"  # names of the asyncio tasks it starts

    def __init__(self, name: str, engine: sa.Engine) -> None:
        self.name = name
        self.engine = engine
        self.listener: NotifyListener | None = None
        self.events = 0  # notifications handled (tests, logs)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._last_beat: dt.datetime | None = None
        self._unreachable_since: float | None = None  # loop time of the first failed beat of an outage
        self._closing = False

    # -- what the subclass provides ---------------------------------------------------------

    @abstractmethod
    def current_config(self) -> Config:
        """The config in force now (a reload replaces it)."""

    @abstractmethod
    def current_services(self) -> OcppServices | None:
        """The OCPP endpoint and rollover engine this node serves with (None: none running)."""

    @abstractmethod
    def now(self) -> dt.datetime:
        """The node's clock (injectable in tests)."""

    @abstractmethod
    def _on_issued(self, cert_name: str) -> None:
        """A certificate's current issuance changed in the store."""

    def _on_lease_freed(self, lease: str) -> None:
        """A lease was released; a node that found it busy may look again."""

    async def _catch_up(self) -> None:
        """The first step of `resync`: what this kind of node may have missed."""

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        config, now = self.current_config(), self.now()
        await asyncio.to_thread(nodes.announce, self.engine, self.name, config.node.address, now)
        await asyncio.to_thread(charger_calls.fail_stale, self.engine, self.name, now)
        self.listener = NotifyListener(config.db_url, asyncio.get_running_loop(), self._on_event,
                                       self._on_connected)
        self.listener.start()
        services = self.current_services()
        if services is not None:
            services.after_reload = self.record_listeners
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name=f"{self.TASK_PREFIX}-heartbeat")

    async def close(self) -> None:
        self._closing = True
        await cancel_all([self._ticker, *self._tasks])
        if self.listener is not None:
            await asyncio.to_thread(self.listener.close)
        try:
            await asyncio.to_thread(nodes.leave, self.engine, self.name, self.now())
        except Exception as exc:  # noqa: BLE001 - the others see it gone after gone_after
            log.warning("node %s: could not record its stop: %s", self.name, exc)

    # -- the loop's side ---------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        if self._closing:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.TASK_PREFIX}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("node %s: %s failed", self.name, task.get_name(), exc_info=task.exception())

    def _on_connected(self) -> None:
        self._spawn(self.resync(), "resync")

    def _on_event(self, event: Event) -> None:
        self.events += 1
        kind, name = event["k"], event.get("name")
        services = self.current_services()
        rollover = services.rollover if services is not None else None
        if kind == "issued" and isinstance(name, str):
            self._on_issued(name)
        elif kind == "gate" and isinstance(name, str):
            if services is not None:
                self._spawn(services.reload(name), f"reload {name}")
            if rollover is not None:
                rollover.kick()
        elif kind == "bundle" and rollover is not None:
            rollover.kick()
        elif kind == "charger" and isinstance(event.get("id"), str):
            self._spawn(self._charger_changed(event["id"]), "charger")
        elif kind == "lease" and isinstance(name, str):
            self._on_lease_freed(name)
        elif kind == "call" and event.get("node") == self.name:
            self._spawn(self._run_calls(), "calls")

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        last_safety = loop.time()
        while True:
            await asyncio.sleep(nodes.HEARTBEAT)
            try:
                await self._heartbeat(self.now())
                if self._unreachable_since is not None:
                    log.info("node %s: the store answers again", self.name)
                    self._unreachable_since = None
                if loop.time() - last_safety >= self.current_config().node.resync_interval:
                    last_safety = loop.time()
                    await self.resync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store may be unreachable: next beat
                if self._unreachable_since is None:  # once per outage, not every beat
                    self._unreachable_since = loop.time()
                    log.warning("node %s: heartbeat failed (the store is unreachable?): %s; the node "
                                "keeps serving and tries again every %g s", self.name, exc, nodes.HEARTBEAT)

    async def _heartbeat(self, now: dt.datetime) -> None:
        """Say this node is alive; a node that was stalled shows its chargers on it again."""
        gone_after = dt.timedelta(seconds=self.current_config().node.gone_after)
        await asyncio.to_thread(nodes.heartbeat, self.engine, self.name, now)
        if self._last_beat is not None and now - self._last_beat > gone_after / 2:
            await self._reclaim_chargers()  # stalled: the others may have taken it for gone
        self._last_beat = now

    async def resync(self) -> None:
        """The safety net: catch up, listeners re-read the store, the engine looks again, calls run."""
        await self._catch_up()
        services = self.current_services()
        if services is not None:
            if services.rollover is not None:
                services.rollover.kick()
            await services.reload(None)
        await self._run_calls()
        await self._reclaim_chargers()

    # -- chargers and listeners ----------------------------------------------------------------

    async def record_listeners(self) -> None:
        """Which issuance each of this node's listeners serves, for `certd nodes` / `certd status`."""
        services = self.current_services()
        endpoint = services.endpoint if services is not None else None
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
        services = self.current_services()
        endpoint = services.endpoint if services is not None else None
        live = list(endpoint.shared.sessions) if endpoint is not None else []
        if live:
            await asyncio.to_thread(nodes.reclaim_chargers, self.engine, self.name, live, self.now())

    async def _charger_changed(self, charger_id: str) -> None:
        """Disabled elsewhere: drop its socket here; approved elsewhere: accepted here at once."""
        from certd.ocpp import charger_registry

        services = self.current_services()
        endpoint = services.endpoint if services is not None else None
        session = endpoint.charger(charger_id) if endpoint is not None else None
        if session is None or session.charge_point is None:
            return
        record = await asyncio.to_thread(charger_registry.lookup, self.engine, charger_id)
        if record is None or not record.enabled:
            log.info("charger %s was %s: closing its connection to node %s", charger_id,
                     "removed" if record is None else "disabled", self.name)
            await session.charge_point._connection.close(1008, "charger disabled")  # noqa: SLF001
        elif record.registration != session.registration:
            approved = session.registration == REGISTRATION_PENDING and record.registration == REGISTRATION_ACCEPTED
            session.registration = record.registration
            if approved:
                await self._boot_again(session)

    async def _boot_again(self, session: ChargerSession) -> None:
        """Approved while connected as pending: ask for a BootNotification now (answered Accepted)
        rather than leave the charger waiting out its retry interval, which may be minutes."""
        from certd.ocpp import calls
        from certd.ocpp.enrollment import send

        sent = await send(session, calls.trigger_boot_notification(session.version),
                          self.current_config().ocpp.call_timeout)
        if sent.outcome == "Accepted":
            log.info("charger %s was approved: asked it to boot again on node %s", session.charger_id, self.name)
        else:
            log.info("charger %s was approved; asking it to boot again failed (%s): it is accepted at its "
                     "next BootNotification", session.charger_id, sent.detail or sent.outcome)

    async def _run_calls(self) -> None:
        services = self.current_services()
        if services is not None and services.endpoint is not None:
            await charger_calls.run_claimed(services.endpoint, self.engine, self.name)
