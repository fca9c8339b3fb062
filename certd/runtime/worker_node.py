"""A worker of `certd run` as a node of a PostgreSQL store (SQLite: nothing here runs).

The supervisor is a full node (certd.runtime.cluster): it takes over leases, writes
new issuances to the target files, runs the hooks and cleans up after gone nodes.
A worker holds chargers, so it does what every node does for its chargers
(certd.runtime.node_base: presence as "<node>-wK", NOTIFY reactions, routed calls,
the safety net); on a new current issuance it only reloads its listeners and tells
its rollover engine (the supervisor deploys the files).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa

from certd.config import Config
from certd.runtime.node_base import StoreNode
from certd.runtime.services import OcppServices
from certd.store.types import utcnow


class WorkerNode(StoreNode):
    TASK_PREFIX = "certd-worker"

    def __init__(self, name: str, config: Config, engine: sa.Engine, services: OcppServices,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        super().__init__(name, engine)
        self.config = config  # the worker replaces it on SIGHUP
        self.services = services
        self.clock = clock

    @staticmethod
    def wanted(engine: sa.Engine) -> bool:
        return engine.dialect.name == "postgresql"

    def current_config(self) -> Config:
        return self.config

    def current_services(self) -> OcppServices | None:
        return self.services

    def now(self) -> dt.datetime:
        return self.clock()

    def _on_issued(self, cert_name: str) -> None:
        if any(c.name == cert_name for c in self.config.certificates):
            self._spawn(self.services.after_deploy(cert_name), f"issued {cert_name}")
