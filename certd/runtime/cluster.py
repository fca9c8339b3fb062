"""`certd run` as one full node of several sharing a PostgreSQL store.

Everything a node does (presence, NOTIFY reactions, the safety net, chargers
approved or disabled elsewhere, routed charger calls) is certd.runtime.node_base's.
What a full node adds (SQLite: nothing here runs; a single node works as before):

- cleanup: nodes gone for `[node] gone_after` have their chargers marked offline
  (certd.runtime.nodes);
- takeover: leases whose holder stopped renewing them (a killed process, a host
  gone, a node cut from the database) are looked for on every heartbeat, and the
  work is started here at once: a certificate's check (which cleans the
  interrupted order's TXT records first), a periodic job;
- deploy: a new current issuance (NOTIFY) is written to this node's own target
  files with its own hooks, then its listeners and the rollover engine are told
  (`OcppServices.after_deploy`); the safety net does the same for every
  certificate this node has not deployed yet;
- a freed lease (NOTIFY) wakes a check of this node that found it busy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING

from certd.config.node import node_name
from certd.runtime import nodes
from certd.runtime.node_base import StoreNode
from certd.store import leases

if TYPE_CHECKING:
    from certd.config import Config
    from certd.runtime.daemon import Daemon
    from certd.runtime.services import OcppServices

log = logging.getLogger("certd.nodes")


class Cluster(StoreNode):
    """Started by the daemon when its store is PostgreSQL (see the module docstring)."""

    def __init__(self, daemon: Daemon) -> None:
        assert daemon.engine is not None
        super().__init__(node_name(daemon.config), daemon.engine)
        self.daemon = daemon
        self._acted_on: dict[str, dt.datetime] = {}

    @staticmethod
    def wanted(daemon: Daemon) -> bool:
        return daemon.engine is not None and daemon.engine.dialect.name == "postgresql"

    def current_config(self) -> Config:
        return self.daemon.config

    def current_services(self) -> OcppServices | None:
        return self.daemon._services  # noqa: SLF001 - wiring of the daemon's own services

    def now(self) -> dt.datetime:
        return self.daemon._clock()  # noqa: SLF001 - the daemon's injectable clock

    async def start(self) -> None:
        await super().start()
        log.info("node %s: sharing the store with the other nodes (heartbeat every %g s)", self.name,
                 nodes.HEARTBEAT)

    def _on_issued(self, cert_name: str) -> None:
        self._spawn(self.follow(cert_name), f"follow {cert_name}")

    def _on_lease_freed(self, lease: str) -> None:
        if lease.startswith("certificate:"):
            cert = lease.removeprefix("certificate:")
            result = self.daemon.results.get(cert)
            if result is not None and result.action == "busy":
                self.daemon.schedule(cert, self.now())

    async def _catch_up(self) -> None:
        for cert in list(self.daemon.config.certificates):
            await self.follow(cert.name)

    async def _heartbeat(self, now: dt.datetime) -> None:
        await super()._heartbeat(now)
        gone_after = dt.timedelta(seconds=self.daemon.config.node.gone_after)
        await asyncio.to_thread(nodes.release_chargers_of_gone, self.engine, self.name, now, gone_after)
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
            log.info("node %s: %s was left by a node that stopped; taking its work over", self.name, lease)
            daemon.schedule(what, now)
        elif kind == "job" and daemon._scheduler is not None:  # noqa: SLF001
            job = daemon._scheduler.get_job(what)  # noqa: SLF001
            if job is not None:
                log.info("node %s: periodic job %s was left by a node that stopped; running it now",
                         self.name, what)
                job.modify(next_run_time=dt.datetime.now(dt.timezone.utc))

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
        services = self.current_services()
        if deployed is not None and services is not None:
            await services.after_deploy(name)
