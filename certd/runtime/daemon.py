"""`certd run`: the long-running service that keeps every certificate alive.

Wiring only. Decisions live in certd.renewal.rules, the work on one certificate in
certd.renewal.check. Here: one asyncio loop with APScheduler's AsyncIOScheduler, one
date job per certificate at its next check (the scheduler sleeps until the
earliest one: no polling), the periodic jobs of certd.runtime.jobs (gray-cloud DNS
sync, challenge cleanup, fleet registry outbox, bundle refresh) and the systemd
watchdog as interval jobs, a bounded pool of worker threads for everything
synchronous (acme, the Cloudflare SDK, files, hooks), the OCPP endpoint and the
rollover engine in the same loop (certd.runtime.services), and the signals:

- SIGTERM/SIGINT: in-flight orders are abandoned at their next wait (their TXT
  records are deleted in obtain's `finally`), then the process exits 0;
- SIGHUP: the config file is read and validated again; on any error the old
  config stays and the log says why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from certd.config import Config, load_config
from certd.errors import CertdError, ConfigError
from certd.renewal.check import Maintainer
from certd.renewal.records import ensure_rows
from certd.renewal.result import CheckResult
from certd.runtime import jobs
from certd.runtime.cluster import Cluster
from certd.runtime.sdnotify import Notifier
from certd.runtime.services import OcppServices
from certd.runtime.watch import LiveCopyWatcher
from certd.store.types import utcnow

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from certd.http.service import HttpService
    from certd.mqtt.service import MqttService
    from certd.ocpp.service import OcppService

log = logging.getLogger("certd.daemon")

T = TypeVar("T")
ServicesFactory = Callable[[sa.Engine, Callable[[], dt.datetime]], OcppServices]

CRASHED_CHECK_RETRY = dt.timedelta(minutes=5)
WORKER_THREADS = 24  # created lazily; checks are bounded by [daemon] concurrency, the rest is small


def restart_only_changes(old: Config, new: Config) -> str | None:
    """Settings a reload cannot apply (they name the store itself)."""
    changed = [key for key in ("state_dir", "database_url") if getattr(old, key) != getattr(new, key)]
    if changed:
        return f"{' and '.join(changed)} changed: restart certd to use a different store"
    return None


class Daemon:
    """Start with `await daemon.run()` (until a signal or `request_shutdown()`), or
    `start()`/`stop()` around an in-process test."""

    def __init__(self, config_path: Path | None, config: Config, *,
                 clock: Callable[[], dt.datetime] = utcnow, notifier: Notifier | None = None,
                 install_signals: bool = True, engine: sa.Engine | None = None,
                 services_factory: ServicesFactory = OcppServices) -> None:
        self.config_path = config_path
        self.config = config
        self.engine = engine
        self._clock = clock
        self._notifier = notifier or Notifier.from_env()
        self._install_signals = install_signals
        self._cancel = threading.Event()  # seen by orders in worker threads
        self._stopping = False
        self._stop_requested: asyncio.Event | None = None
        self._changed: asyncio.Condition | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._maintainer: Maintainer | None = None
        self._running: set[str] = set()
        self._recheck: dict[str, dt.datetime] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Tasks waiting on a worker thread (checks, periodic jobs): stop() waits for them too,
        # since the interpreter would wait for their threads at exit anyway.
        self._thread_waits: set[asyncio.Task[Any]] = set()
        self._services: OcppServices | None = None  # set once the store is open
        # OcppServices in this process, or certd.runtime.workers.WorkerPool (`[ocpp] workers`).
        self._services_factory = services_factory
        self._live_watch: LiveCopyWatcher | None = None
        self._mqtt: MqttService | None = None  # [mqtt]: Home Assistant entities, MQTT registries
        self.cluster: Cluster | None = None  # one node of several (PostgreSQL): certd.runtime.cluster
        self._http: HttpService | None = None  # [http]: metrics, probes, status page (certd.http)
        self.results: dict[str, CheckResult] = {}
        self.checks_done = 0
        self.stuck_threads = False
        self._own_engine = False

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> int:
        await self.start()
        assert self._stop_requested is not None
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()
        return 0

    async def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        from certd.dns.challenges import cleanup_leftover_records

        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._changed = asyncio.Condition()
        self._reload_lock = asyncio.Lock()
        self._semaphore = asyncio.Semaphore(self.config.daemon.concurrency)
        self._executor = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="certd-worker")
        if self.engine is None:
            self.engine = await self._in_thread(self._open_store)
            self._own_engine = True
        self._maintainer = Maintainer(self.config, self.engine, clock=self._clock)
        dns = await self._in_thread(self._maintainer.dns)  # a missing token fails the start, clearly
        await self._in_thread(cleanup_leftover_records, dns, self.engine, "certd run")
        await self._reconcile()
        await self._start_http()  # [http] before anything else listens: a taken port fails the start
        self._scheduler = AsyncIOScheduler(event_loop=loop, timezone=dt.timezone.utc, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        self._scheduler.start()
        if self._install_signals:
            loop.add_signal_handler(signal.SIGTERM, self.request_shutdown, "SIGTERM")
            loop.add_signal_handler(signal.SIGINT, self.request_shutdown, "SIGINT")
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        now = self._clock()
        for cert in self.config.certificates:
            self.schedule(cert.name, now)
        self._services = self._services_factory(self.engine, self._clock)
        await self._services.start(self.config)
        self._live_watch = LiveCopyWatcher(Path(self.config.state_dir) / "live", self._deployed_elsewhere)
        await self._live_watch.start()
        from certd.mqtt.service import MqttService  # MQTT: certd.mqtt; nothing runs without [mqtt] host
        self._mqtt = MqttService(self.engine, self._clock, ocpp=lambda: self.ocpp)
        await self._mqtt.start(self.config)
        if Cluster.wanted(self):
            self.cluster = Cluster(self)
            await self.cluster.start()
        await self._schedule_periodic_jobs(self.config)
        if self._notifier.watchdog_interval:
            self._scheduler.add_job(self._watchdog, "interval", seconds=self._notifier.watchdog_interval,
                                    id="watchdog")
        log.info("certd running: %d certificate(s), store %s", len(self.config.certificates),
                 self.config.db_url.split("://")[0])
        self._notifier.ready(self._status_line())

    def request_shutdown(self, why: str = "shutdown requested") -> None:
        """Stop soon: in-flight orders are abandoned cleanly, nothing new starts."""
        if not self._stopping:
            log.info("%s: stopping; orders in flight are abandoned and their TXT records deleted", why)
        self._stopping = True
        self._cancel.set()
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def stop(self) -> None:
        self._stopping = True
        self._cancel.set()
        self._notifier.stopping()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.remove_all_jobs()
        # Wait for the checks in flight before the scheduler shuts down: its shutdown cancels the
        # tasks it started, and a cancelled task no longer waits for its worker thread (which
        # goes on with the order and its cleanup).
        current = asyncio.current_task()
        pending = [t for t in self._tasks | self._thread_waits if not t.done() and t is not current]
        if pending:
            timeout = self.config.daemon.shutdown_timeout
            _, still = await asyncio.wait(pending, timeout=timeout)
            if still:
                self.stuck_threads = True
                log.error("%d check(s) or job(s) still running after %.0fs; exiting anyway (challenge "
                          "records they left are removed at the next start)", len(still), timeout)
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self._live_watch is not None:
            await self._live_watch.close()
        if self._mqtt is not None:  # `offline` on the broker before the endpoint goes
            await self._mqtt.close()
        if self.cluster is not None:
            await self.cluster.close()
        if self._services is not None:
            await self._services.close()
        await self._stop_http()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._own_engine and self.engine is not None and not self.stuck_threads:
            self.engine.dispose()
        log.info("certd stopped")

    # -- scheduling ----------------------------------------------------------------------
    def schedule(self, name: str, when: dt.datetime) -> None:
        """Run the check of `name` at `when` (in the daemon's clock), replacing any earlier plan."""
        if self._stopping or self._scheduler is None:
            return
        if name in self._running:
            previous = self._recheck.get(name)
            self._recheck[name] = when if previous is None else min(previous, when)
            return
        delay = max(0.0, (when - self._clock()).total_seconds())
        run_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delay)
        # max_instances=2: a re-check asked for while this certificate's check runs is scheduled
        # from that check's own `finally`, when APScheduler still counts it as running; with the
        # default of 1 the new one-off job would be skipped and dropped (no check ever again).
        # `_running`/`_recheck` keep two checks of one certificate from overlapping.
        self._scheduler.add_job(self._check_job, "date", run_date=run_at, args=[name],
                                id=f"check:{name}", name=f"check {name}", replace_existing=True,
                                max_instances=2)

    @property
    def ocpp(self) -> OcppService | None:
        """The running OCPP service (None when no listener is configured or it failed to start)."""
        return self._services.endpoint if self._services is not None else None

    async def _check_job(self, name: str) -> None:
        if self._stopping:
            return
        task = asyncio.current_task()
        assert task is not None and self._semaphore is not None
        self._tasks.add(task)
        self._running.add(name)
        next_at: dt.datetime | None = None
        try:
            async with self._semaphore:
                if self._stopping:
                    return
                maintainer = self._maintainer
                assert maintainer is not None
                result = await self._in_thread(maintainer.check, name, cancel=self._cancel)
            self.results[name] = result
            next_at = result.next_check
            if result.deployed and self._services is not None:
                await self._services.after_deploy(name)
        except ConfigError as exc:  # the certificate left the config while its check waited
            log.info("%s: not checked: %s", name, exc)
        except Exception:  # noqa: BLE001 - a bug in one check must not stop the others
            log.exception("%s: the check crashed; trying again in %s", name, CRASHED_CHECK_RETRY)
            next_at = self._clock() + CRASHED_CHECK_RETRY
        finally:
            self._running.discard(name)
            self._tasks.discard(task)
            again = self._recheck.pop(name, None)
            if again is not None:
                next_at = again if next_at is None else min(next_at, again)
            if next_at is not None and any(c.name == name for c in self.config.certificates):
                self.schedule(name, next_at)
            self.checks_done += 1
            await self._announce()

    async def _deployed_elsewhere(self, names: set[str]) -> None:
        """Another certd process (a hand-run `certd issue`) deployed these: serve them now."""
        known = {cert.name for cert in self.config.certificates}
        for name in sorted(names & known):
            if self._services is not None:
                await self._services.after_deploy(name)
        if self._mqtt is not None:
            self._mqtt.state_changed()

    async def _announce(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        if not self._stopping:
            self._notifier.status(self._status_line())
        if self._mqtt is not None:
            self._mqtt.state_changed()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds after some check finished (tests, `certd renew` helpers)."""
        assert self._changed is not None
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                return False
        return True

    def _status_line(self) -> str:
        failing = sorted(n for n, r in self.results.items() if r.action == "failed")
        upcoming = [r for r in self.results.values() if r.next_check]
        text = f"{len(self.config.certificates)} certificate(s)"
        if upcoming:
            soonest = min(upcoming, key=lambda r: r.next_check)
            text += f"; next check {soonest.name} at {soonest.next_check:%Y-%m-%d %H:%M} UTC"
        if failing:
            text += f"; failing: {', '.join(failing)}"
        return text

    # -- reload (SIGHUP) -----------------------------------------------------------------
    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(), name="certd-reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> bool:
        """Read the config file again; keep the old config (and say why) if it is not valid."""
        assert self._reload_lock is not None and self.engine is not None
        async with self._reload_lock:
            if self._stopping or self.config_path is None:
                return False
            self._notifier.reloading()
            try:
                return await self._reload_locked()
            finally:  # systemd waits for READY=1 after RELOADING=1, whatever happened
                self._notifier.ready(self._status_line())

    async def _reload_locked(self) -> bool:
        assert self.config_path is not None and self.engine is not None
        log.info("SIGHUP: reloading %s", self.config_path)
        try:
            new = await self._in_thread(load_config, self.config_path)
            problem = restart_only_changes(self.config, new)
            if problem:
                raise ConfigError(f"{self.config_path}: {problem}")
            maintainer = Maintainer(new, self.engine, clock=self._clock)
            await self._in_thread(maintainer.dns)  # the token must still be readable
        except CertdError as exc:
            log.error("reload failed; still running on the previous configuration:\n%s", exc)
            return False
        old = self.config
        self.config, self._maintainer = new, maintainer
        if new.daemon.concurrency != old.daemon.concurrency:
            # Checks already waiting keep the old bound; new ones get the new one.
            self._semaphore = asyncio.Semaphore(new.daemon.concurrency)
        await self._reconcile()
        names = {c.name for c in new.certificates}
        assert self._scheduler is not None
        for job in list(self._scheduler.get_jobs()):
            if job.id.startswith("check:") and job.id.removeprefix("check:") not in names:
                job.remove()
        now = self._clock()
        for name in sorted(names):
            self.schedule(name, now)  # look at everything again under the new config
        for periodic in jobs.PERIODIC_JOBS:  # scheduled again below as the new config wants
            if self._scheduler.get_job(periodic.name) is not None:
                self._scheduler.remove_job(periodic.name)
        assert self._services is not None
        await self._services.apply(old, new)
        if self._mqtt is not None:
            await self._mqtt.apply(old, new)
        await self._schedule_periodic_jobs(new)
        await self._reload_http(new)
        log.info("configuration reloaded: %d certificate(s)", len(new.certificates))
        return True

    async def _reconcile(self) -> None:
        """Every configured certificate gets its rows; stored ones no longer configured are reported."""
        assert self.engine is not None
        orphans = await self._in_thread(ensure_rows, self.engine, [c.name for c in self.config.certificates])
        for name in orphans:
            log.info("%s: in the store but no longer in the config; not renewed (its files stay)", name)

    # -- periodic jobs (certd.runtime.jobs) -------------------------------------------------
    async def _schedule_periodic_jobs(self, config: Config) -> None:
        """Every job `config` wants runs once now, then on its interval."""
        assert self._scheduler is not None and self.engine is not None
        now = dt.datetime.now(dt.timezone.utc)
        for job in await self._in_thread(jobs.enabled_jobs, config, self.engine):
            self._scheduler.add_job(self._run_periodic, "interval", args=[job], seconds=job.interval(config),
                                    id=job.name, name=job.name, replace_existing=True, next_run_time=now)

    async def _run_periodic(self, job: jobs.PeriodicJob) -> None:
        if self._stopping:
            return
        assert self._maintainer is not None and self.engine is not None
        run = jobs.JobRun(self.config, self.engine, self._maintainer, self._clock, now=self._clock())
        await jobs.run_periodic(job, run, self._in_thread)
        if self._mqtt is not None:  # a job may have changed bundles, deliveries, DNS
            self._mqtt.state_changed()

    async def _watchdog(self) -> None:
        # A coroutine on purpose: the ping proves the event loop itself is alive.
        self._notifier.watchdog()

    # -- HTTP server (certd.http): metrics, probes, status page ------------------------------
    async def _open_http(self) -> None:
        from certd.http.live import LiveSources, scheduler_state
        from certd.http.service import HttpService

        live = LiveSources(clock=self._clock, ocpp=lambda: self.ocpp,
                           scheduler=lambda: scheduler_state(self._scheduler, self._running))
        service = HttpService(self.config, self.engine, live=live)  # type: ignore[arg-type]
        await service.start()  # ConfigError naming the key: address taken, secret unreadable
        self._http = service

    async def _start_http(self) -> None:
        if self.config.http.enabled:
            try:
                await self._open_http()
            except BaseException:
                await self.stop()
                raise

    async def _stop_http(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _reload_http(self, new: Config) -> None:
        try:
            if self._http is not None:
                await self._http.reload(new)
            elif new.http.enabled:
                await self._open_http()
        except CertdError as exc:
            log.error("HTTP server: the new [http] settings were not applied: %s", exc)

    # -- plumbing ------------------------------------------------------------------------
    def _open_store(self) -> sa.Engine:
        from certd.store.db import make_engine, upgrade

        upgrade(self.config.db_url, store=self.config.store)
        return make_engine(self.config.db_url, self.config.store)

    async def _in_thread(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is not None:
            self._thread_waits.add(task)
        try:
            return await loop.run_in_executor(self._executor, functools.partial(func, *args, **kwargs))
        finally:
            if task is not None:
                self._thread_waits.discard(task)
