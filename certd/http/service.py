"""certd's HTTP server: metrics, health probes, JSON status and the status page, in the daemon's loop.

    service = HttpService(config, engine, live=LiveSources(clock=..., ocpp=..., scheduler=...))
    await service.start()          # binds every [http] listen address, or raises ConfigError
    await service.reload(config)   # SIGHUP: new credentials, addresses or certificate
    await service.close()

Why aiohttp: a mature asyncio HTTP server that runs inside the loop certd already
has (the OCPP endpoint, the scheduler), with TLS through the same ssl contexts
and Jinja2 templates through aiohttp-jinja2, so no HTTP is written by hand.
Everything shown is read from the store in a worker thread of a small pool of
its own (a slow scrape never takes a thread from the renewals) and from live
objects on the loop (certd.http.live). Read-only: GET and HEAD only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import sqlalchemy as sa
from aiohttp import web

from certd import metrics
from certd.config import Config
from certd.config.http import HttpConfig, http_certificate_errors
from certd.errors import CertdError, ConfigError
from certd.http import snapshot, views
from certd.http.credentials import Credentials, load_credentials
from certd.http.live import ConnectedCounts, LiveSources, LiveView
from certd.http.rollover_cache import RolloverCache
from certd.http.templating import page_environment
from certd.http.tls_material import HttpTls, secret_values

log = logging.getLogger("certd.http")

HTTP_THREADS = 2
LAG_INTERVAL = 0.5  # seconds between event-loop lag samples
TEMPLATES = Path(__file__).parent / "templates"


class HttpService:
    def __init__(self, config: Config, engine: sa.Engine, *, live: LiveSources | None = None) -> None:
        self.config = config
        self.engine = engine
        self.live = live or LiveSources()
        self.credentials = Credentials()
        self.secrets: tuple[str, ...] = ()
        self.loop_lag = 0.0
        self.executor: ThreadPoolExecutor | None = None
        self.verify_slot = asyncio.Semaphore(1)  # one argon2 check at a time, whatever the load
        self._tls: HttpTls | None = None
        self._runner: web.AppRunner | None = None
        self._sites: list[web.TCPSite] = []
        self._lag_task: asyncio.Task[None] | None = None
        self.rollover = RolloverCache(self._rollover_now)
        self.connected = ConnectedCounts()
        self.tallies = snapshot.TallyCache()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every address; ConfigError (naming the key) when one is taken or a secret unreadable."""
        if not self.config.http.enabled:
            return
        metrics.enable()  # from now on the ACME client, Cloudflare adapter and listeners count
        self.executor = ThreadPoolExecutor(max_workers=HTTP_THREADS, thread_name_prefix="certd-http")
        try:
            await self._apply(self.config)
        except BaseException:
            await self.close()
            raise
        self._lag_task = asyncio.get_running_loop().create_task(self._watch_lag(), name="certd-http-lag")
        # No warm-up read here: the modules the first scrape imports (rollover, trust) would cost
        # every idle `certd run` ~5 MB of RSS; that first scrape pays ~0.2 s instead.

    async def reload(self, config: Config) -> None:
        """Apply a new config; on any error the running server keeps the old one (and this raises)."""
        old = self.config
        if not config.http.enabled:
            await self.close()
            self.config = config
            return
        if self.executor is None:
            self.config = config
            await self.start()
            return
        if self._needs_rebind(old.http, config.http):
            await self._stop_sites()
            try:
                await self._apply(config)
            except CertdError:
                log.error("HTTP server: the new [http] settings failed; serving the previous ones again")
                await self._apply(old)
                raise
        else:
            await self._load_settings(config)
        self.config = config
        self.rollover.clear()  # listeners, bundles or rollover settings may have changed
        self.tallies.clear()
        if self._tls is not None:
            await self._tls.refresh(config)

    async def close(self) -> None:
        await self.rollover.close()
        self.connected.follow(None)
        if self._lag_task is not None:
            self._lag_task.cancel()
            try:
                await self._lag_task
            except asyncio.CancelledError:
                pass
            self._lag_task = None
        await self._stop_sites()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None

    # -- introspection (tests, logs) ---------------------------------------------------------
    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) actually bound, in [http] listen order (port 0 resolved)."""
        bound = []
        for site in self._sites:
            server = site._server  # noqa: SLF001 - aiohttp keeps the asyncio server there
            for sock in getattr(server, "sockets", None) or []:
                bound.append(tuple(sock.getsockname()[:2]))
        return bound  # type: ignore[return-value]

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    # -- plumbing ----------------------------------------------------------------------------
    @staticmethod
    def _needs_rebind(old: HttpConfig, new: HttpConfig) -> bool:
        return old.listen != new.listen or (old.tls is None) != (new.tls is None)

    async def _load_settings(self, config: Config) -> None:
        errors = http_certificate_errors(config.http, [c.name for c in config.certificates])
        if errors:
            raise ConfigError("; ".join(errors))
        credentials = await self.in_thread(load_credentials, config.http.auth)
        self.secrets = await self.in_thread(secret_values, config, credentials)
        self.credentials = credentials

    async def _apply(self, config: Config) -> None:
        await self._load_settings(config)
        self.config = config
        if config.http.tls is not None:
            self._tls = HttpTls(self.engine, self.in_thread, self.live.clock)
            await self._tls.refresh(config)
            self._tls.start_watching(lambda: self.config)
        else:
            self._tls = None
        app = web.Application(middlewares=[views.guard], client_max_size=1024)
        app[views.SERVICE] = self
        app[aiohttp_jinja2.APP_KEY] = page_environment(TEMPLATES)
        views.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        for index, address in enumerate(config.http.addresses):
            site = web.TCPSite(runner, address.host, address.port, reuse_address=True, backlog=128,
                               ssl_context=self._tls.holder.listening_context if self._tls else None)
            try:
                await site.start()
            except OSError as exc:
                await self._stop_sites()
                raise ConfigError(f"http.listen[{index}]: cannot listen on {address}: "
                                  f"{exc.strerror or exc}") from None
            self._sites.append(site)
        for host, port in self.addresses:
            log.info("HTTP server on %s://%s:%d (metrics, /livez, /readyz, status page)%s", self.scheme,
                     f"[{host}]" if ":" in host else host, port,
                     "" if self.credentials.required else "; no authentication (loopback only)")

    async def _stop_sites(self) -> None:
        if self._tls is not None:
            await self._tls.stop_watching()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._sites = []

    async def _watch_lag(self) -> None:
        """How late the loop wakes this task up: the /livez measure of an event loop that answers."""
        loop = asyncio.get_running_loop()
        while True:
            planned = loop.time() + LAG_INTERVAL
            await asyncio.sleep(LAG_INTERVAL)
            late = max(0.0, loop.time() - planned)
            self.loop_lag = late if late > self.loop_lag else self.loop_lag * 0.5 + late * 0.5

    async def _rollover_now(self, live: LiveView) -> list[dict[str, Any]]:
        return await self.in_thread(snapshot.rollover, self.config, self.engine, live, self.now())  # type: ignore[no-any-return]

    async def in_thread(self, func: Any, *args: Any, timeout: float | None = None) -> Any:
        """Run `func(*args)` in the HTTP server's own worker threads."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, func, *args)
        if timeout is None:
            return await future
        return await asyncio.wait_for(future, timeout)

    def now(self) -> Any:
        return self.live.clock()

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()
