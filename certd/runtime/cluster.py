"""`certd run` as one node of several sharing a PostgreSQL store.

What one node does for the others, and what it learns from them (SQLite: nothing
here runs; a single node works as before):

- presence: its `node` row, a heartbeat every HEARTBEAT s; nodes gone for
  `[node] gone_after` have their chargers marked offline (certd.runtime.nodes), and a
  node that finds its own chargers shown offline (it was stalled) shows them again;
- takeover: leases whose holder stopped renewing them (a killed process, a host
  gone, a node cut from the database) are looked for on every heartbeat, and the
  work is started here at once: a certificate's check (which cleans the
  interrupted order's TXT records first), a periodic job;
- NOTIFY (certd.runtime.notify_listener): a new current issuance is deployed to
  this node's own target files with its own hooks, then its listeners and the
  rollover engine are told (`OcppServices.after_deploy`); a rollover gate change
  reloads the listeners and kicks the engine; a new bundle version kicks the
  engine; a charger disabled or approved elsewhere is dropped or accepted here; a
  freed lease wakes a check that found it busy; a charger call addressed to this
  node is run (certd.runtime.charger_calls);
- safety net: after every (re)connection of the listener and every SAFETY_INTERVAL
  seconds, every certificate is compared with what this node deployed, so a lost
  notification costs at most that long.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from certd.config.node import node_name
from certd.runtime import charger_calls, nodes
from certd.runtime.notify_listener import Event, NotifyListener
from certd.store import deploy_state, leases

if TYPE_CHECKING:
    from certd.runtime.daemon import Daemon

log = logging.getLogger("certd.nodes")

SAFETY_INTERVAL = 30.0
_SOURCE = re.compile(r"^certificate (\S+) \(issued #(\d+)")


class Cluster:
    """Started by the daemon when its store is PostgreSQL (see the module docstring)."""

    def __init__(self, daemon: Daemon) -> None:
        assert daemon.engine is not None
        self.daemon = daemon
        self.engine = daemon.engine
        self.node = node_name(daemon.config)
        self.listener: NotifyListener | None = None
        self.events = 0  # notifications handled (tests, logs)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._acted_on: dict[str, dt.datetime] = {}
        self._last_beat: dt.datetime | None = None
        self._unreachable_since: float | None = None  # expired lease -> when this node acted on it
        self._closing = False

    @staticmethod
    def wanted(daemon: Daemon) -> bool:
        return daemon.engine is not None and daemon.engine.dialect.name == "postgresql"

    async def start(self) -> None:
        config = self.daemon.config
        now = self.daemon._clock()  # noqa: SLF001 - the daemon's injectable clock
        await asyncio.to_thread(nodes.announce, self.engine, self.node, config.node.address, now)
        await asyncio.to_thread(charger_calls.fail_stale, self.engine, self.node, now)
        self.listener = NotifyListener(config.db_url, asyncio.get_running_loop(), self._on_event,
                                       self._on_connected)
        self.listener.start()
        if self.daemon._services is not None:  # noqa: SLF001
            self.daemon._services.after_reload = self.record_listeners  # noqa: SLF001
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="certd-node-heartbeat")
        log.info("node %s: sharing the store with the other nodes (heartbeat every %g s)", self.node,
                 nodes.HEARTBEAT)

    async def close(self) -> None:
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
        for task in [self._ticker, *self._tasks]:
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing anyway
                pass
        if self.listener is not None:
            await asyncio.to_thread(self.listener.close)
        try:
            await asyncio.to_thread(nodes.leave, self.engine, self.node, self.daemon._clock())  # noqa: SLF001
        except Exception as exc:  # noqa: BLE001 - the others see it gone after gone_after
            log.warning("node %s: could not record its stop: %s", self.node, exc)

    # -- the loop's side -------------------------------------------------------------------

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
            log.error("node %s: %s failed", self.node, task.get_name(), exc_info=task.exception())

    def _on_connected(self) -> None:
        self._spawn(self.resync(), "certd-node-resync")

    def _on_event(self, event: Event) -> None:
        self.events += 1
        kind, name = event["k"], event.get("name")
        services = self.daemon._services  # noqa: SLF001 - wiring of the daemon's own services
        rollover = services.rollover if services is not None else None
        if kind == "issued" and isinstance(name, str):
            self._spawn(self.follow(name), f"certd-node-follow {name}")
        elif kind == "gate" and isinstance(name, str):
            if services is not None:
                self._spawn(self._reload(name), f"certd-node-reload {name}")
            if rollover is not None:
                rollover.kick()
        elif kind == "bundle" and rollover is not None:
            rollover.kick()
        elif kind == "charger" and isinstance(event.get("id"), str):
            self._spawn(self._charger_changed(event["id"]), "certd-node-charger")
        elif kind == "lease" and isinstance(name, str) and name.startswith("certificate:"):
            cert = name.removeprefix("certificate:")
            result = self.daemon.results.get(cert)
            if result is not None and result.action == "busy":
                self.daemon.schedule(cert, self.daemon._clock())  # noqa: SLF001
        elif kind == "call" and event.get("node") == self.node:
            self._spawn(self._run_calls(), "certd-node-calls")

    async def _tick(self) -> None:
        last_safety = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(nodes.HEARTBEAT)
            try:
                await self._heartbeat()
                if self._unreachable_since is not None:
                    log.info("node %s: the store answers again", self.node)
                    self._unreachable_since = None
                if asyncio.get_running_loop().time() - last_safety >= SAFETY_INTERVAL:
                    last_safety = asyncio.get_running_loop().time()
                    await self.resync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store may be unreachable: next beat
                if self._unreachable_since is None:  # once per outage, not every beat
                    self._unreachable_since = asyncio.get_running_loop().time()
                    log.warning("node %s: heartbeat failed (the store is unreachable?): %s; the node "
                                "keeps serving and tries again every %g s", self.node, exc, nodes.HEARTBEAT)

    async def _heartbeat(self) -> None:
        daemon = self.daemon
        now = daemon._clock()  # noqa: SLF001
        gone_after = dt.timedelta(seconds=daemon.config.node.gone_after)
        await asyncio.to_thread(nodes.heartbeat, self.engine, self.node, now)
        if self._last_beat is not None and now - self._last_beat > gone_after / 2:
            await self._reclaim_chargers()  # this node was stalled: the others may have taken it for gone
        self._last_beat = now
        await asyncio.to_thread(nodes.release_chargers_of_gone, self.engine, self.node, now, gone_after)
        for lease in await asyncio.to_thread(leases.expired, self.engine, now):
            last = self._acted_on.get(lease)
            if last is None or now - last >= dt.timedelta(seconds=nodes.HEARTBEAT * 3):
                self._acted_on[lease] = now
                self._take_over(lease, now)
        self._acted_on = {k: v for k, v in self._acted_on.items() if now - v < dt.timedelta(minutes=5)}

    def _take_over(self, lease: str, now: dt.datetime) -> None:
        """The holder of `lease` stopped renewing it: do its work here now."""
        daemon = self.daemon
        kind, _, what = lease.partition(":")
        if kind == "certificate" and any(c.name == what for c in daemon.config.certificates):
            log.info("node %s: %s was left by a node that stopped; taking its work over", self.node, lease)
            daemon.schedule(what, now)
        elif kind == "job" and daemon._scheduler is not None:  # noqa: SLF001
            job = daemon._scheduler.get_job(what)  # noqa: SLF001
            if job is not None:
                log.info("node %s: periodic job %s was left by a node that stopped; running it now",
                         self.node, what)
                job.modify(next_run_time=dt.datetime.now(dt.timezone.utc))

    async def resync(self) -> None:
        """The safety net: deploy whatever this node missed, reload, run calls waiting for it."""
        for cert in list(self.daemon.config.certificates):
            await self.follow(cert.name)
        services = self.daemon._services  # noqa: SLF001
        if services is not None and services.rollover is not None:
            services.rollover.kick()
        if services is not None:
            await services.reload(None)
        await self._run_calls()
        await self._reclaim_chargers()

    async def _reclaim_chargers(self) -> None:
        services = self.daemon._services  # noqa: SLF001
        if services is not None and services.endpoint is not None:
            live = list(services.endpoint.shared.sessions)
            if live:
                await asyncio.to_thread(nodes.reclaim_chargers, self.engine, self.node, live,
                                        self.daemon._clock())  # noqa: SLF001

    async def follow(self, name: str) -> None:
        """Deploy `name`'s current issuance to this node's targets if it has not yet, then tell the
        listeners and the rollover engine; never alongside a check of `name` on this node."""
        from certd.renewal.pipeline import follow_current

        daemon = self.daemon
        if daemon._stopping or not any(c.name == name for c in daemon.config.certificates):  # noqa: SLF001
            return
        running = daemon._running  # noqa: SLF001 - the daemon's per-certificate exclusion
        while name in running:
            await asyncio.sleep(0.05)
        running.add(name)
        try:
            deployed = await daemon._in_thread(follow_current, daemon.config, self.engine, name)  # noqa: SLF001
        except Exception as exc:  # noqa: BLE001 - the next check redeploys (its files are not current)
            log.error("%s: deploying the issuance another node made failed here: %s", name, exc)
            deployed = None
        finally:
            running.discard(name)
            again = daemon._recheck.pop(name, None)  # noqa: SLF001
            if again is not None:
                daemon.schedule(name, again)
        if deployed is not None and daemon._services is not None:  # noqa: SLF001
            await daemon._services.after_deploy(name)  # noqa: SLF001

    async def _reload(self, name: str) -> None:
        services = self.daemon._services  # noqa: SLF001
        if services is not None:
            await services.reload(name)

    async def record_listeners(self) -> None:
        """Which issuance each of this node's listeners serves, for `certd nodes` / `certd status`."""
        services = self.daemon._services  # noqa: SLF001
        endpoint = services.endpoint if services is not None else None
        if endpoint is None:
            return
        served: dict[str, dict[str, int]] = {}
        for listener in endpoint.listeners:
            for item in endpoint.served(listener.label):
                match = _SOURCE.match(item.source)
                if match:
                    served.setdefault(match[1], {})[listener.label] = int(match[2])
        await asyncio.to_thread(deploy_state.record_listeners, self.engine, self.node, served)

    async def _charger_changed(self, charger_id: str) -> None:
        """Disabled elsewhere: drop its socket here; approved elsewhere: accepted here at once."""
        from certd.ocpp import charger_registry

        services = self.daemon._services  # noqa: SLF001
        endpoint = services.endpoint if services is not None else None
        session = endpoint.charger(charger_id) if endpoint is not None else None
        if session is None or session.charge_point is None:
            return
        record = await asyncio.to_thread(charger_registry.lookup, self.engine, charger_id)
        if record is None or not record.enabled:
            log.info("charger %s was %s: closing its connection to node %s", charger_id,
                     "removed" if record is None else "disabled", self.node)
            await session.charge_point._connection.close(1008, "charger disabled")  # noqa: SLF001
        elif record.registration != session.registration:
            session.registration = record.registration

    async def _run_calls(self) -> None:
        services = self.daemon._services  # noqa: SLF001
        if services is not None and services.endpoint is not None:
            await charger_calls.run_claimed(services.endpoint, self.engine, self.node)


def deploy_summary(rows: list[Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """certificate -> node -> {"files": issued id, "hooks_pending", "listeners": {label: id}}."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        summary.setdefault(row.certificate, {})[row.node] = {
            "files": row.issued_id, "hooks_pending": row.hooks_pending,
            "listeners": json.loads(row.listeners_json or "{}")}
    return summary
