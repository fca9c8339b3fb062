"""The trust rollover engine: give connected chargers the roots they lack, open each gate in time.

    rollover = RolloverEngine(config, engine, service)   # service: a started OcppService
    await rollover.start()
    ...
    await rollover.on_issued("fleet-rsa")   # after a deploy (the daemon calls it)
    await rollover.close()

What it does, in the OCPP service's loop:
- gates (`certd.rollover.evaluate`): a newer issuance whose chain ends at roots the
  served one does not use is held back (`certd.serve.material` serves the previous
  certificate) until the configured share of the listener's registered chargers
  confirmed those roots, or until the previous certificate's last days begin:
  then it switches anyway, logs an error and calls the alert (`certd.rollover.alerts`,
  by default the daemon's notify hook) naming every charger still lacking them;
- provisioning (`certd.rollover.attempt`): every connected charger of a gated
  listener that has not confirmed the listener's latest bundle version, or lacks
  the priority roots the listener needs now (`gates.needed_roots`), gets what it
  lacks, then GetInstalledCertificateIds confirms it; at most `[rollover] concurrency`
  chargers at once, one request at a time each, always from a task of its own;
  when a charger is tried again is `certd.rollover.policy`'s decision;
- triggers: `on_issued` / `kick()`, a charger connecting (after its
  BootNotification, or `boot_wait` seconds), a BootNotification (retries a
  charger that failed before), and a look at the store every `check_interval`
  seconds (issuances by another process, deadlines, retries due).

Threads: store I/O runs in worker threads (`evaluate`, `charger_store`), which
write the store and RETURN what the engine should remember; only the event loop
applies it to the engine's memory (`_LoopMemory`: plans, copies of charger rows,
the hash index, tasks). The memory's containers raise `WrongThread` when a worker
writes them (`certd.rollover.loop_owned`), so a violation fails loudly and tests
see it in `memory.owner.violations`.

Everything it must remember across restarts is in the store (`certd.store.rollover`):
a restart resumes a pending gate, and chargers that confirmed are not asked again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa

from certd.config import Config
from certd.rollover import charger_store, policy
from certd.rollover import gates as rules
from certd.rollover.alerts import Alert, ForcedSwitch, notify_hook_alert
from certd.rollover.attempt import provision_charger
from certd.rollover.evaluate import GateReport, evaluate_gates, release_ungated
from certd.rollover.gate_store import KnownCerts, gate_specs
from certd.rollover.loop_owned import LoopDict, LoopOwned, LoopOwner, LoopSet
from certd.rollover.plans import Confirmed, HashIndex, ListenerPlan
from certd.rollover.provision import Provisioner
from certd.store.types import utcnow
from certd.tasks import cancel_all

if TYPE_CHECKING:
    from certd.ocpp.service import OcppService
    from certd.ocpp.session import ChargerSession

__all__ = ["ForcedSwitch", "GateReport", "RolloverEngine"]

log = logging.getLogger("certd.rollover")


class _LoopMemory(LoopOwned):
    """What the engine's coroutines read without locks; changed only on the event loop."""

    def __init__(self, owner: LoopOwner) -> None:
        super().__init__(owner)
        self.owner = owner
        self.plans: dict[str, ListenerPlan] = {}  # replaced whole by every evaluation
        self.any_pending = False  # some gate waits for chargers
        self.index = HashIndex()
        # Per charger, copies of its store row, so a sweep over thousands of connections reads
        # nothing: the listener it was last seen on, what it confirmed, when it may be tried again.
        self.listener_of: LoopDict[str, str | None] = LoopDict(owner, "listener_of")
        self.confirmed: LoopDict[str, Confirmed] = LoopDict(owner, "confirmed")
        self.not_before: LoopDict[str, dt.datetime] = LoopDict(owner, "not_before")
        self.inflight: LoopDict[str, asyncio.Task[None]] = LoopDict(owner, "inflight")
        self.booted: LoopDict[str, asyncio.Event] = LoopDict(owner, "booted")
        self.retry_now: LoopSet[str] = LoopSet(owner, "retry_now")  # rebooted: try regardless of back-off
        self.facts_stale: LoopSet[str] = LoopSet(owner, "facts_stale")  # rebooted: ask its facts again
        self.installs_sent = 0  # InstallCertificate requests this process sent (bench, tests)

    def remember(self, charger_id: str, recorded: charger_store.Recorded) -> None:
        """Apply what `charger_store.record_attempt` stored."""
        if recorded.confirmed is not None:
            self.confirmed[charger_id] = recorded.confirmed
        else:
            self.confirmed.pop(charger_id, None)
        if recorded.not_before is not None:
            self.not_before[charger_id] = recorded.not_before
        else:
            self.not_before.pop(charger_id, None)


class RolloverEngine:
    """Runs the trust rollover from the OCPP service's loop (see the module docstring)."""

    def __init__(self, config: Config, engine: sa.Engine, service: "OcppService", *,
                 clock: Callable[[], dt.datetime] = utcnow, alert: Alert | None = None) -> None:
        self.config = config
        self.settings = config.rollover
        self.engine = engine
        self.service = service
        self.clock = clock
        # Called (in a worker thread) after a forced switch has been logged at error level.
        self.alert = alert or notify_hook_alert(config)
        self.specs, self.notes = gate_specs(config)  # ConfigError for bad overrides
        self.provisioner = Provisioner(service, self.settings.call_timeout)
        self.known_certs = KnownCerts()  # shared by worker threads (it locks itself)
        self.memory = _LoopMemory(LoopOwner())
        self._wake = asyncio.Event()
        self._sweep_wanted = True
        self._eval_lock = asyncio.Lock()
        self._semaphore = asyncio.Semaphore(self.settings.concurrency)
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def installs_sent(self) -> int:
        return self.memory.installs_sent

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.memory.owner.bind()  # this loop's thread owns the memory from now on
        for note in self.notes:
            log.warning("%s", note)
        await asyncio.to_thread(release_ungated, self.engine, self.specs)
        loaded = await asyncio.to_thread(charger_store.load_memory, self.engine, self.known_certs)
        self.memory.listener_of.update(loaded.listener_of)
        self.memory.confirmed.update(loaded.confirmed)
        self.memory.not_before.update(loaded.not_before)
        if not self.specs:
            log.info("trust rollover: no gated OCPP listener (%s)", "[rollover] enabled = false"
                     if not self.settings.enabled else "no [[trust.bundles]] entry covers a listener")
            return
        self.service.add_charger_hook(self._on_charger_event)
        await self.evaluate()
        self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="certd-rollover")
        self.kick()

    async def close(self) -> None:
        self._closing = True
        self.service.remove_charger_hook(self._on_charger_event)
        await cancel_all([self._loop_task, *self.memory.inflight.values()])
        self._loop_task = None
        self.memory.inflight.clear()

    def kick(self) -> None:
        """Look at gates and connected chargers soon (new issuance, new bundle version)."""
        self._sweep_wanted = True
        self._wake.set()

    async def on_issued(self, name: str | None = None) -> list[GateReport]:
        """After an issuance + deploy: decide the gates now, then provision connected chargers."""
        reports = await self.evaluate()
        await self.sweep()
        return reports

    async def wait_idle(self, timeout: float) -> bool:
        """Until no charger is being provisioned and the gates were looked at (tests, bench)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        delay = 0.01
        while loop.time() < end:
            if not self.memory.inflight and not self._wake.is_set():
                async with self._eval_lock:
                    if not self.memory.inflight and not self._wake.is_set():
                        return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        return False

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.check_interval)
                periodic = False
            except TimeoutError:
                periodic = True
            self._wake.clear()
            try:
                await self.evaluate()  # may ask for a sweep (a plan changed)
                if self._sweep_wanted or periodic:
                    self._sweep_wanted = False
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("trust rollover: evaluation failed")

    # -- gates -------------------------------------------------------------------------------

    async def evaluate(self) -> list[GateReport]:
        """Decide every gate now; reload listeners that switched; alert on forced switches."""
        memory = self.memory
        async with self._eval_lock:
            live = set(self.service.shared.sessions)
            before = {label: plan.key() for label, plan in memory.plans.items()}
            result = await asyncio.to_thread(evaluate_gates, self.engine, self.config, self.specs,
                                             self.known_certs, self.clock(), live)
            memory.plans, memory.any_pending = result.plans, result.any_pending
            if before != {label: plan.key() for label, plan in memory.plans.items()}:
                self.kick()  # other chargers are due now (new bundle version or priority roots)
        for report in result.reports:
            if report.switched:
                log.info("listener %s now serves %s issuance #%s: %s", report.listener,
                         report.cert_name, report.served_id, report.reason)
                await self.service.reload(report.cert_name)
            if report.forced and report.decision is not None:
                await self._alert(report, report.decision)
        return list(result.reports)

    async def _alert(self, report: GateReport, decision: rules.GateDecision) -> None:
        spec = next(s for s in self.specs if (s.listener, s.cert_name) == (report.listener, report.cert_name))
        event = ForcedSwitch(report.listener, report.cert_name, spec.bundle, report.served_id,
                             report.reason or "deadline", decision.lacking)
        log.error("%s", event.message())
        for item in event.lacking:
            log.error("  %s: %s", item.charger_id, item.reason)
        try:
            await asyncio.to_thread(self.alert, event)
        except Exception:  # noqa: BLE001
            log.exception("trust rollover: the alert for listener %s failed", report.listener)

    # -- chargers ------------------------------------------------------------------------------

    def _on_charger_event(self, session: "ChargerSession", event: str) -> None:
        if self._closing:
            return
        memory, charger_id = self.memory, session.charger_id
        if event == "connected":
            memory.booted[charger_id] = asyncio.Event()
            if self._due(charger_id, session.listener, self.clock()):
                self._schedule(charger_id, wait_boot=True)
        elif event == "booted":
            memory.retry_now.add(charger_id)  # a reboot may have changed firmware or store
            memory.facts_stale.add(charger_id)
            booted = memory.booted.get(charger_id)
            if booted is not None:
                booted.set()
            if charger_id not in memory.inflight:
                self._schedule(charger_id, wait_boot=False)
        elif event == "disconnected":
            if self.service.charger(charger_id) is None:
                memory.booted.pop(charger_id, None)

    async def sweep(self) -> int:
        """Start provisioning every connected charger that is due; returns how many started."""
        started = 0
        now = self.clock()
        for charger_id, session in list(self.service.shared.sessions.items()):
            if charger_id in self.memory.inflight or not self._due(charger_id, session.listener, now):
                continue
            self._schedule(charger_id, wait_boot=False)
            started += 1
        return started

    def _due(self, charger_id: str, listener: str, now: dt.datetime) -> bool:
        memory = self.memory
        return policy.charger_due(
            memory.plans.get(listener), listener, memory.listener_of.get(charger_id),
            memory.confirmed.get(charger_id), memory.not_before.get(charger_id), now,
            retry_now=charger_id in memory.retry_now)

    def _schedule(self, charger_id: str, *, wait_boot: bool) -> None:
        if self._closing or charger_id in self.memory.inflight:
            return
        task = asyncio.get_running_loop().create_task(self._provision(charger_id, wait_boot),
                                                      name=f"certd-rollover-{charger_id}")
        self.memory.inflight[charger_id] = task
        task.add_done_callback(lambda t, cid=charger_id: self._done(cid, t))

    def _done(self, charger_id: str, task: asyncio.Task[None]) -> None:
        if self.memory.inflight.get(charger_id) is task:
            del self.memory.inflight[charger_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("trust rollover: provisioning charger %s crashed", charger_id,
                      exc_info=task.exception())
        if self.memory.any_pending:
            self._wake.set()  # a gate may open now

    async def _provision(self, charger_id: str, wait_boot: bool) -> None:
        memory = self.memory
        booted = memory.booted.get(charger_id)
        if wait_boot and booted is not None and self.settings.boot_wait > 0:
            try:
                await asyncio.wait_for(booted.wait(), self.settings.boot_wait)
            except TimeoutError:
                pass  # a charger that reconnects without rebooting sends no BootNotification
        async with self._semaphore:
            session = self.service.charger(charger_id)
            if session is None:
                return
            retry = charger_id in memory.retry_now
            memory.retry_now.discard(charger_id)
            read = await asyncio.to_thread(
                charger_store.read_context, self.engine, self.known_certs, memory.index, charger_id,
                session.listener, session.version, memory.plans.get(session.listener), self.clock(),
                retry=retry, facts_stale=charger_id in memory.facts_stale)
            memory.listener_of[charger_id] = session.listener
            if read.index is not memory.index:
                memory.index = read.index
            context = read.context
            if context is None:
                return
            if context.facts is None:
                memory.facts_stale.discard(charger_id)  # asked now; a reboot from here on marks it again
            result = await provision_charger(self.provisioner, charger_id, context, self._count_install)
            recorded = await asyncio.to_thread(
                charger_store.record_attempt, self.engine, charger_id, context.plan, result.facts,
                result.answered, result.attempt, self.clock(), self.settings.retry_after)
            memory.remember(charger_id, recorded)

    def _count_install(self) -> None:
        self.memory.installs_sent += 1
