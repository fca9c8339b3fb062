"""What `certd run` serves next to the renewals: the OCPP endpoint and the trust rollover engine.

Both are optional in the sense that renewals go on without them: a port that is
taken or an engine that fails to start is logged, and the next reload tries again.
The OCPP modules are imported only when a listener is configured, so an install
without listeners never pays for websockets and ocpp.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa

from certd.config import Config
from certd.errors import CertdError

if TYPE_CHECKING:
    from certd.ocpp.service import OcppService
    from certd.rollover.engine import RolloverEngine

log = logging.getLogger("certd.daemon")


class Service(Protocol):
    """A long-running part of the daemon: started once, closed at shutdown or before a restart."""

    async def start(self) -> object: ...

    async def close(self) -> None: ...


class ReloadableService(Service, Protocol):
    """A service that serves certificates and re-reads them after a renewal."""

    async def reload(self, cert_name: str | None = None) -> object:
        """Re-read the material of `cert_name` (of every certificate when None)."""
        ...


async def close_quietly(service: Service, what: str) -> None:
    """Close `service`; a failure is logged, never raised (the other services still close)."""
    try:
        await service.close()
    except Exception:  # noqa: BLE001
        log.exception("%s did not close cleanly", what)


async def reload_quietly(service: ReloadableService, cert_name: str | None) -> None:
    """Re-read `cert_name` (all when None); a failure is logged and the old material stays served."""
    try:
        await service.reload(cert_name)
    except Exception:  # noqa: BLE001
        log.exception("OCPP listeners could not reload %s", cert_name or "their certificates")


class OcppServices:
    """The OCPP endpoint and the rollover engine that drives it, started and stopped together."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], dt.datetime], *,
                 reuse_port: bool = False) -> None:
        self._engine = engine
        self._clock = clock
        self._reuse_port = reuse_port  # a worker of certd.runtime.workers shares its ports
        self.endpoint: OcppService | None = None
        self.rollover: RolloverEngine | None = None
        # Called after listeners re-read their material (certd.runtime.cluster records what they serve).
        self.after_reload: Callable[[], Awaitable[None]] | None = None

    async def start(self, config: Config) -> None:
        """Open the listeners `config` names (if any), then the rollover engine on them."""
        if not (config.ocpp.enabled and config.ocpp.listeners):
            return
        from certd.rollover.engine import RolloverEngine
        from certd.ocpp.service import OcppService, tune_process_for_many_connections

        try:
            service = OcppService(config, self._engine, reuse_port=self._reuse_port)
            results = await service.start()
        except Exception as exc:  # noqa: BLE001 - renewals go on even if a port is taken
            log.error("OCPP endpoint did not start: %s", exc, exc_info=not isinstance(exc, CertdError))
            return
        self.endpoint = service
        for result in results:
            if result.error:
                log.error("OCPP listener %s not serving yet: %s", result.listener, result.error)
        tune_process_for_many_connections()
        try:
            # Started even with [rollover] off: it then releases gates a previous run left in the store.
            rollover = RolloverEngine(config, self._engine, service, clock=self._clock)
            await rollover.start()
        except Exception as exc:  # noqa: BLE001 - the endpoint serves on without root rollover
            log.error("the trust rollover engine did not start: %s", exc, exc_info=not isinstance(exc, CertdError))
            return
        self.rollover = rollover

    async def close(self) -> None:
        """The rollover engine first (it sends through the endpoint), then the endpoint."""
        if self.rollover is not None:
            await close_quietly(self.rollover, "the trust rollover engine")
            self.rollover = None
        if self.endpoint is not None:
            await close_quietly(self.endpoint, "OCPP endpoint")
            self.endpoint = None

    async def apply(self, old: Config, new: Config) -> None:
        """After a reload: listeners re-read their material when nothing they depend on changed,
        else everything restarts under `new`."""
        unchanged = (new.ocpp == old.ocpp and new.certificates == old.certificates
                     and new.rollover == old.rollover and new.trust == old.trust)
        if self.endpoint is not None and unchanged:
            await self.reload(None)
        else:
            await self.close()
            await self.start(new)

    async def reload(self, cert_name: str | None) -> None:
        """Listeners serving `cert_name` (all when None) re-read their material."""
        if self.endpoint is not None:
            await reload_quietly(self.endpoint, cert_name)
            if self.after_reload is not None:
                try:
                    await self.after_reload()
                except Exception as exc:  # noqa: BLE001 - a record for status displays only
                    log.warning("could not record what the listeners serve: %s", exc)

    async def after_deploy(self, name: str) -> None:
        """A new certificate is stored and written: gates decide, then listeners re-read."""
        if self.rollover is not None:
            try:
                await self.rollover.on_issued(name)
            except Exception:  # noqa: BLE001
                log.exception("%s: the trust rollover engine failed on the new issuance", name)
        await self.reload(name)
