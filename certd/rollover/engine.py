"""The trust rollover engine: give connected chargers the roots they lack, open each gate in time.

    rollover = RolloverEngine(config, engine, service)   # service: a started OcppService
    await rollover.start()
    ...
    await rollover.on_issued("fleet-rsa")   # after a deploy (the daemon calls it)
    await rollover.close()

What it does, in the OCPP service's loop:
- gates: for every gated (listener, certificate) pair a `rollover_gate` row says
  what the listener serves. A newer issuance whose chain ends at roots the
  served one does not use is held back (`certd.serve.material` serves the previous
  certificate) until the configured share of the listener's registered chargers
  confirmed those roots, or until the previous certificate's last days begin:
  then it switches anyway, logs an error and calls the alert (the daemon's
  notify hook) naming every charger still lacking them;
- provisioning: every connected charger of a gated listener that has not
  confirmed the listener's latest bundle version, or lacks the priority roots
  the listener needs now (`rules.needed_roots`), gets what it lacks
  (InstallCertificate, one PEM per call, the most needed root first), then
  GetInstalledCertificateIds confirms it; at most `[rollover] concurrency`
  chargers at once, one request at a time each, always from a task of its own;
- triggers: `on_issued` / `kick()`, a charger connecting (after its
  BootNotification, or `boot_wait` seconds), a BootNotification (retries a
  charger that failed before), and a look at the store every `check_interval`
  seconds (issuances by another process, deadlines, retries due).

Everything it must remember is in the store (`certd.store.rollover`): a restart
resumes a pending gate, and chargers that confirmed are not asked again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import select

from certd.config import Config
from certd.rollover.provision import ChargerFacts, Provisioner, hash_index, match_installed
from certd.store.db import session_scope
from certd.store.models import IssuedCertificate, ManagedCertificate
from certd.store.rollover import (
    CHARGER_CONFIRMED, CHARGER_FAILED, CHARGER_PENDING, GATE_BLOCKED, GATE_IDLE, GATE_PENDING,
    RolloverCharger, RolloverGate,
)
from certd.store.types import utcnow
from certd.rollover import gates as rules
from certd.trust.certs import CaCert
from certd.rollover.gates import Identity, identity_of
from certd.rollover.gate_store import (
    GateSpec, KnownCerts, bundle_target, chain_roots, charger_view, gate_priority, gate_specs,
    held_bundles, held_roots, listener_chargers,
)

if TYPE_CHECKING:
    from certd.ocpp.service import OcppService
    from certd.ocpp.session import ChargerSession

log = logging.getLogger("certd.rollover")

# Outcomes after which a charger waits `retry_after` (or its next boot) before the next try.
HARD_FAILURES = {"Rejected", "Failed", "NotSupported", "error", "needs-cross-sign", "store-full",
                 "too-large"}
TIMEOUT_BACKOFF_START = 60.0


@dataclass(frozen=True)
class ForcedSwitch:
    """A listener switched at its deadline although chargers still lack the roots."""

    listener: str
    cert_name: str
    bundle: str
    served_id: int | None
    reason: str
    lacking: tuple[rules.Lacking, ...]

    # The notify hook's interface (certd.notify.run_notify_hook): event, name, message,
    # environment, payload.
    event: str = "rollover-forced"

    @property
    def name(self) -> str:
        return self.cert_name

    def message(self, now: dt.datetime | None = None) -> str:
        names = ", ".join(item.charger_id for item in self.lacking[:20])
        more = f" and {len(self.lacking) - 20} more" if len(self.lacking) > 20 else ""
        return (f"certd: listener {self.listener} switched {self.cert_name} to a certificate whose "
                f"roots {len(self.lacking)} charger(s) do not hold ({self.reason}): {names}{more}")

    def payload(self, now: dt.datetime | None = None) -> dict[str, object]:
        return {"event": self.event, "listener": self.listener, "name": self.cert_name,
                "bundle": self.bundle, "served_id": self.served_id, "reason": self.reason,
                "lacking": [{"charger_id": item.charger_id, "reason": item.reason} for item in self.lacking],
                "message": self.message(now)}

    def environment(self, now: dt.datetime | None = None) -> dict[str, str]:
        return {"CERTD_EVENT": self.event, "CERTD_CERT_NAME": self.cert_name,
                "CERTD_LISTENER": self.listener, "CERTD_BUNDLE": self.bundle,
                "CERTD_LACKING": " ".join(item.charger_id for item in self.lacking),
                "CERTD_MESSAGE": self.message(now)}


Alert = Callable[[ForcedSwitch], None]


@dataclass(frozen=True)
class GateReport:
    """What one evaluation did to one gate."""

    listener: str
    cert_name: str
    state: str
    switched: bool = False
    forced: bool = False
    reason: str | None = None
    decision: rules.GateDecision | None = None
    served_id: int | None = None


@dataclass
class ListenerPlan:
    """What a listener's chargers should hold right now (rebuilt at every gate evaluation)."""

    label: str
    gsm: bool
    targets: dict[str, int] = field(default_factory=dict)  # bundle -> latest version
    members: tuple[CaCert, ...] = ()
    priority: frozenset[Identity] = frozenset()
    # The priority roots in the bundle versions: a charger is current only when it holds them.
    needed: frozenset[Identity] = frozenset()

    def key(self) -> tuple[object, ...]:
        """What decides which chargers are due (a change means: look at them again)."""
        return (tuple(sorted(self.targets.items())), self.needed)


@dataclass(frozen=True)
class Confirmed:
    """A copy of what a charger's store row says it confirmed: bundle versions and held roots."""

    bundles: dict[str, int]
    roots: frozenset[Identity]


@dataclass
class _Context:
    """One charger's provisioning inputs, read from the store in one go."""

    plan: ListenerPlan
    known: dict[str, CaCert]
    index: dict[Any, str]
    facts: ChargerFacts | None  # None: ask the charger


@dataclass(frozen=True)
class Attempt:
    """How one provisioning attempt ended, as `_record_sync` stores it."""

    outcome: str  # Accepted, or a RolloverCharger.last_result value
    reason: str | None
    sent: int = 0  # InstallCertificate requests sent
    held_fps: set[str] | None = None  # None: GetInstalledCertificateIds did not answer
    held_ids: frozenset[Identity] = frozenset()
    unknown: int = 0  # installed CSMS roots certd does not know
    refused: bool = False  # some InstallCertificate was answered Rejected


def facts_answered(facts: ChargerFacts) -> bool:
    """Whether GetConfiguration / GetVariables was answered: `Provisioner.facts` notes only why not."""
    return not facts.notes


def notify_hook_alert(config: Config) -> Alert:
    """Run the daemon's notify hook (`[daemon] notify_hook`) when one is configured."""
    def alert(event: ForcedSwitch) -> None:
        daemon = getattr(config, "daemon", None)
        command = getattr(daemon, "notify_hook", None)
        if not command:
            return
        try:
            from certd.notify import run_notify_hook
        except ImportError:  # an install without the daemon's notify module
            return
        run_notify_hook(command, event, now=utcnow(), timeout=float(getattr(daemon, "notify_timeout", 30.0)),  # type: ignore[arg-type]
                        hide_env=config.secret_env_names())
    return alert


class RolloverEngine:
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
        self._known = KnownCerts()
        self._index_key: tuple[str, ...] = ()
        self._index: dict[Any, str] = {}
        self._plans: dict[str, ListenerPlan] = {}
        self._listener_of: dict[str, str | None] = {}
        # Per charger: bundle versions and roots it confirmed, and when it may be tried again
        # (copies of its store row, so a sweep over thousands of connections reads nothing).
        self._confirmed: dict[str, Confirmed] = {}
        self._not_before: dict[str, dt.datetime] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._booted: dict[str, asyncio.Event] = {}
        self._retry_now: set[str] = set()
        self._facts_stale: set[str] = set()
        self._wake = asyncio.Event()
        self._sweep_wanted = True
        self._any_pending = False
        self._eval_lock = asyncio.Lock()
        self._semaphore = asyncio.Semaphore(self.settings.concurrency)
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False
        self.installs_sent = 0  # InstallCertificate requests this process sent (bench, tests)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        for note in self.notes:
            log.warning("%s", note)
        await asyncio.to_thread(self._init_store)  # releases gates of pairs no longer gated
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
        tasks = [t for t in (self._loop_task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing anyway
                pass
        self._loop_task = None
        self._inflight.clear()

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
            if not self._inflight and not self._wake.is_set():
                async with self._eval_lock:
                    if not self._inflight and not self._wake.is_set():
                        return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        return False

    # -- the loop ----------------------------------------------------------------------------

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

    def _init_store(self) -> None:
        """Gate rows for every gated pair; rows of pairs no longer gated are released."""
        wanted = {(s.listener, s.cert_name) for s in self.specs}
        with session_scope(self.engine) as session:
            known = self._known.refresh(session)
            for gate in session.exec(select(RolloverGate)).all():
                if (gate.listener, gate.cert_name) not in wanted:
                    log.info("listener %s: certificate %s is no longer gated; serving the current one",
                             gate.listener, gate.cert_name)
                    session.delete(gate)
            for row in session.exec(select(RolloverCharger)).all():
                self._listener_of[row.charger_id] = row.listener
                if row.state == CHARGER_CONFIRMED:
                    self._confirmed[row.charger_id] = Confirmed(held_bundles(row), held_roots(row, known))
                if row.next_attempt_at is not None:
                    self._not_before[row.charger_id] = row.next_attempt_at

    async def evaluate(self) -> list[GateReport]:
        """Decide every gate now; reload listeners that switched; alert on forced switches."""
        async with self._eval_lock:
            live = set(self.service.shared.sessions)
            before = {label: plan.key() for label, plan in self._plans.items()}
            reports = await asyncio.to_thread(self._evaluate_sync, self.clock(), live)
            if before != {label: plan.key() for label, plan in self._plans.items()}:
                self.kick()  # other chargers are due now (new bundle version or priority roots)
        for report in reports:
            if report.switched:
                log.info("listener %s now serves %s issuance #%s: %s", report.listener,
                         report.cert_name, report.served_id, report.reason)
                await self.service.reload(report.cert_name)
            if report.forced and report.decision is not None:
                spec = next(s for s in self.specs if (s.listener, s.cert_name) == (report.listener, report.cert_name))
                event = ForcedSwitch(report.listener, report.cert_name, spec.bundle, report.served_id,
                                     report.reason or "deadline", report.decision.lacking)
                log.error("%s", event.message())
                for item in event.lacking:
                    log.error("  %s: %s", item.charger_id, item.reason)
                try:
                    await asyncio.to_thread(self.alert, event)
                except Exception:  # noqa: BLE001
                    log.exception("trust rollover: the alert for listener %s failed", report.listener)
        return reports

    def _evaluate_sync(self, now: dt.datetime, live: set[str]) -> list[GateReport]:
        reports: list[GateReport] = []
        with session_scope(self.engine) as session:
            known = self._known.refresh(session)
            plans: dict[str, ListenerPlan] = {}
            for spec in self.specs:
                gate = session.get(RolloverGate, (spec.listener, spec.cert_name))
                if gate is None:
                    gate = RolloverGate(listener=spec.listener, cert_name=spec.cert_name)
                    managed = session.get(ManagedCertificate, spec.cert_name)
                    current = managed.current_id if managed else None
                    gate.served_id = gate.decided_id = current  # what is served now stays served
                    session.add(gate)
                gate.bundle, gate.gate_share, gate.deadline_days = spec.bundle, spec.gate_share, spec.deadline_days
                report = self._evaluate_gate(session, spec, gate, known, now, live)
                gate.updated_at = now
                session.add(gate)
                session.flush()
                reports.append(report)
                self._add_to_plan(session, plans, spec, gate, known)
            for plan in plans.values():
                plan.needed = rules.needed_roots(plan.members, plan.priority)
            self._plans = plans
            self._any_pending = any(r.state in (GATE_PENDING, GATE_BLOCKED) for r in reports)
        return reports

    def _evaluate_gate(self, session: Any, spec: GateSpec, gate: RolloverGate,
                       known: dict[str, CaCert], now: dt.datetime, live: set[str]) -> GateReport:
        managed = session.get(ManagedCertificate, spec.cert_name)
        current_id = managed.current_id if managed else None
        if current_id is not None and gate.decided_id != current_id:
            if current_id == gate.served_id:
                self._settle(gate, GATE_IDLE, None)
                gate.decided_id = current_id
            else:
                switched = self._new_issuance(session, spec, gate, current_id, now)
                if switched is not None:
                    return switched
        if gate.state == GATE_BLOCKED and gate.pending_id is not None:
            switched = self._retry_blocked(session, spec, gate, now)
            if switched is not None:
                return switched
        if gate.state not in (GATE_PENDING, GATE_BLOCKED):
            return GateReport(spec.listener, spec.cert_name, gate.state, served_id=gate.served_id)
        views = self._views(session, spec, known, live)
        if gate.state == GATE_BLOCKED:
            decision = rules.blocked_gate(gate.reason or "roots unknown", views,
                                          deadline_at=gate.deadline_at, now=now, bundle=spec.bundle)
        else:
            required = frozenset(Identity.from_json(d) for d in json.loads(gate.required_json or "[]"))
            decision = rules.decide_gate(required, views, gate_share=spec.gate_share,
                                         deadline_at=gate.deadline_at, now=now, bundle=spec.bundle)
        if not decision.switch:
            return GateReport(spec.listener, spec.cert_name, gate.state, reason=decision.reason,
                              decision=decision, served_id=gate.served_id)
        new_id = gate.pending_id
        self._switch(gate, new_id, decision.reason, decision.forced, decision.lacking, now)
        return GateReport(spec.listener, spec.cert_name, gate.state, True, decision.forced,
                          decision.reason, decision, new_id)

    def _new_issuance(self, session: Any, spec: GateSpec, gate: RolloverGate, current_id: int,
                      now: dt.datetime) -> GateReport | None:
        pending_roots, problem = chain_roots(session, self.config, spec.bundle, current_id)
        gate.decided_id = current_id
        gate.started_at = now
        return self._hold_back(session, spec, gate, current_id, pending_roots, problem, now)

    def _retry_blocked(self, session: Any, spec: GateSpec, gate: RolloverGate,
                       now: dt.datetime) -> GateReport | None:
        """Work out a blocked gate's roots again: the operator may have fixed the anchor set
        since (as the block's error tells them); then the gate waits for chargers or opens."""
        assert gate.pending_id is not None
        pending_roots, _ = chain_roots(session, self.config, spec.bundle, gate.pending_id)
        if pending_roots is None:
            return None  # still unknown; the reason logged when it blocked still holds
        log.info("listener %s: the roots of %s issuance #%s are known now", spec.listener,
                 spec.cert_name, gate.pending_id)
        return self._hold_back(session, spec, gate, gate.pending_id, pending_roots, None, now)

    def _hold_back(self, session: Any, spec: GateSpec, gate: RolloverGate, pending_id: int,
                   pending_roots: frozenset[Identity] | None, problem: str | None,
                   now: dt.datetime) -> GateReport | None:
        """Serve issuance `pending_id` now, or make the gate wait for it (pending or blocked)."""
        served = session.get(IssuedCertificate, gate.served_id) if gate.served_id is not None else None
        served_roots = None
        if served is not None:
            served_roots, _ = chain_roots(session, self.config, spec.bundle, served.id)
        decision = rules.on_new_issuance(
            served_id=served.id if served else None, served_not_after=served.not_after if served else None,
            pending_roots=pending_roots, served_roots=served_roots, deadline_days=spec.deadline_days,
            now=now, unresolved=problem)
        if decision.action == "release":
            self._switch(gate, pending_id, decision.reason, False, (), now)
            return GateReport(spec.listener, spec.cert_name, gate.state, True, False, decision.reason,
                              served_id=pending_id)
        gate.pending_id = pending_id
        gate.state = GATE_PENDING if decision.action == "hold" else GATE_BLOCKED
        gate.required_json = json.dumps([i.to_json() for i in sorted(decision.required)])
        gate.reason = decision.reason
        gate.deadline_at = decision.deadline_at
        log.info("listener %s: keeps serving %s issuance #%s; issuance #%s waits: %s (deadline %s)",
                 spec.listener, spec.cert_name, gate.served_id, pending_id, decision.reason,
                 f"{decision.deadline_at:%Y-%m-%d %H:%M} UTC" if decision.deadline_at else "none")
        if decision.action == "block":
            log.error("listener %s: %s", spec.listener, decision.reason)
        return None

    @staticmethod
    def _settle(gate: RolloverGate, state: str, reason: str | None) -> None:
        gate.state, gate.reason, gate.pending_id, gate.required_json = state, reason, None, "[]"

    def _switch(self, gate: RolloverGate, new_id: int | None, reason: str, forced: bool,
                lacking: tuple[rules.Lacking, ...], now: dt.datetime) -> None:
        gate.served_id = new_id
        self._settle(gate, GATE_IDLE, None)
        gate.switched_at, gate.switch_reason, gate.forced = now, reason, forced
        gate.lacking_json = json.dumps([{"charger_id": item.charger_id, "reason": item.reason}
                                        for item in lacking])
        gate.deadline_at = None

    def _views(self, session: Any, spec: GateSpec, known: dict[str, CaCert],
               live: set[str]) -> list[rules.ChargerView]:
        rows = listener_chargers(session, spec.listener, {s.listener for s in self.specs})
        return [charger_view(r, known, r.charger.charger_id in live or r.charger.connected_node is not None,
                             spec.gsm) for r in rows]

    def _add_to_plan(self, session: Any, plans: dict[str, ListenerPlan], spec: GateSpec,
                     gate: RolloverGate, known: dict[str, CaCert]) -> None:
        plan = plans.setdefault(spec.listener, ListenerPlan(spec.listener, spec.gsm))
        target = bundle_target(session, spec.bundle, self.settings.flavour, known)
        if target is not None:
            plan.targets[spec.bundle] = target.seq
            have = {c.fingerprint for c in plan.members}
            plan.members = plan.members + tuple(c for c in target.members if c.fingerprint not in have)
        plan.priority |= gate_priority(session, self.config, spec.bundle, gate, known)

    # -- chargers ------------------------------------------------------------------------------

    def _on_charger_event(self, session: "ChargerSession", event: str) -> None:
        if self._closing:
            return
        charger_id = session.charger_id
        if event == "connected":
            self._booted[charger_id] = asyncio.Event()
            if self._due(charger_id, session.listener, self.clock()):
                self._schedule(charger_id, wait_boot=True)
        elif event == "booted":
            self._retry_now.add(charger_id)  # a reboot may have changed firmware or store
            self._facts_stale.add(charger_id)
            booted = self._booted.get(charger_id)
            if booted is not None:
                booted.set()
            if charger_id not in self._inflight:
                self._schedule(charger_id, wait_boot=False)
        elif event == "disconnected":
            if self.service.charger(charger_id) is None:
                self._booted.pop(charger_id, None)

    async def sweep(self) -> int:
        """Start provisioning every connected charger that is due; returns how many started."""
        started = 0
        now = self.clock()
        for charger_id, session in list(self.service.shared.sessions.items()):
            if charger_id in self._inflight or not self._due(charger_id, session.listener, now):
                continue
            self._schedule(charger_id, wait_boot=False)
            started += 1
        return started

    def _due(self, charger_id: str, listener: str, now: dt.datetime) -> bool:
        """From memory: does this charger lack its listener's bundle versions or priority roots,
        and may it be tried?"""
        plan = self._plans.get(listener)
        if plan is None or not plan.targets:
            return self._listener_of.get(charger_id) != listener  # only to record where it is
        confirmed = self._confirmed.get(charger_id)
        if confirmed is not None and rules.plan_covered(confirmed.bundles, confirmed.roots,
                                                        plan.targets, plan.needed):
            return False
        not_before = self._not_before.get(charger_id)
        return charger_id in self._retry_now or not_before is None or not_before <= now

    def _schedule(self, charger_id: str, *, wait_boot: bool) -> None:
        if self._closing or charger_id in self._inflight:
            return
        task = asyncio.get_running_loop().create_task(self._provision(charger_id, wait_boot),
                                                      name=f"certd-rollover-{charger_id}")
        self._inflight[charger_id] = task
        task.add_done_callback(lambda t, cid=charger_id: self._done(cid, t))

    def _done(self, charger_id: str, task: asyncio.Task[None]) -> None:
        if self._inflight.get(charger_id) is task:
            del self._inflight[charger_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("trust rollover: provisioning charger %s crashed", charger_id,
                      exc_info=task.exception())
        if self._any_pending:
            self._wake.set()  # a gate may open now

    async def _provision(self, charger_id: str, wait_boot: bool) -> None:
        booted = self._booted.get(charger_id)
        if wait_boot and booted is not None and self.settings.boot_wait > 0:
            try:
                await asyncio.wait_for(booted.wait(), self.settings.boot_wait)
            except TimeoutError:
                pass  # a charger that reconnects without rebooting sends no BootNotification
        async with self._semaphore:
            session = self.service.charger(charger_id)
            if session is None:
                return
            now = self.clock()
            retry = charger_id in self._retry_now
            self._retry_now.discard(charger_id)
            context = await asyncio.to_thread(self._context, charger_id, session.listener,
                                              session.version, now, retry)
            if context is None:
                return
            await self._provision_one(charger_id, context)

    def _context(self, charger_id: str, listener: str, version: str, now: dt.datetime,
                 retry: bool) -> _Context | None:
        """Read the charger's row; None when it has nothing to do now (writes its listener)."""
        plan = self._plans.get(listener)
        with session_scope(self.engine) as session:
            row = session.get(RolloverCharger, charger_id)
            if row is None:
                row = RolloverCharger(charger_id=charger_id)
            if row.listener != listener or row.ocpp_version != version:
                row.listener, row.ocpp_version, row.updated_at = listener, version, now
                session.add(row)
            self._listener_of[charger_id] = listener
            if plan is None or not plan.targets:
                return None  # not a gated listener, or no bundle version yet
            known = self._known.refresh(session)
            current = row.state == CHARGER_CONFIRMED and rules.plan_covered(
                held_bundles(row), held_roots(row, known), plan.targets, plan.needed)
            if current:
                return None
            if not retry and row.next_attempt_at is not None and row.next_attempt_at > now:
                return None
            facts = None
            if row.facts_at is not None and charger_id not in self._facts_stale:
                facts = ChargerFacts(row.store_max, row.store_used, row.additional_root_check)
        key = tuple(sorted(known))
        if key != self._index_key:
            self._index, self._index_key = hash_index(known.values()), key
        return _Context(plan, known, self._index, facts)

    async def _provision_one(self, charger_id: str, context: _Context) -> None:
        plan, known = context.plan, context.known
        facts = context.facts
        # None: the stored facts were used; True/False: asked now, and whether the charger answered.
        answered: bool | None = None
        if facts is None:
            facts = await self.provisioner.facts(charger_id)
            answered = facts_answered(facts)
            self._facts_stale.discard(charger_id)
            for note in facts.notes:
                log.debug("charger %s: %s", charger_id, note)
        listing = await self.provisioner.installed(charger_id)
        if not listing.reply.ok:
            await self._record(charger_id, plan, facts, answered, Attempt(
                listing.reply.outcome, f"GetInstalledCertificateIds: {listing.reply.detail}"))
            return
        held_fps, unknown = match_installed(listing.hash_data, context.index)
        held = [known[fp] for fp in held_fps]
        target = rules.target_for(plan.members, plan.priority, facts.additional_root_check)
        used = facts.store_used if facts.store_used is not None else len(held) + unknown
        install_plan = rules.plan_installs(
            target, held, list(known.values()), priority=plan.priority,
            additional_root_check=facts.additional_root_check, store_max=facts.store_max, store_used=used)
        sent = 0
        failures: list[tuple[str, str]] = []
        accepted = 0
        for cert in install_plan.send:
            reply = await self.provisioner.install(charger_id, cert.pem)
            sent += 1
            self.installs_sent += 1
            if reply.ok:
                accepted += 1
                log.info("charger %s accepted %s", charger_id, cert.subject)
                continue
            failures.append((reply.outcome, f"{cert.subject}: {reply.detail or reply.outcome}"))
            log.warning("charger %s did not install %s: %s %s", charger_id, cert.subject,
                        reply.outcome, reply.detail or "")
            if reply.outcome in ("offline", "timeout"):
                break
        # A refusal may come from a rule the stored facts do not show (AdditionalRootCertificateCheck
        # switched on, a full store): the next attempt asks the charger again.
        refused = any(outcome == "Rejected" for outcome, _ in failures)
        if accepted:
            listing = await self.provisioner.installed(charger_id)
            if listing.reply.ok:
                held_fps, unknown = match_installed(listing.hash_data, context.index)
            else:
                failures.append((listing.reply.outcome, f"GetInstalledCertificateIds: {listing.reply.detail}"))
        held_ids = rules.identities(known[fp] for fp in held_fps)
        missing = [c for c in target if identity_of(c) not in held_ids]
        if not missing:
            await self._record(charger_id, plan, facts, answered, Attempt(
                "Accepted", None, sent, held_fps, held_ids, unknown, refused))
            return
        if not failures and install_plan.problems:
            problem = install_plan.problems[0]
            failures.append((problem.code, problem.reason))
        if not failures:
            names = ", ".join(sorted({c.subject for c in missing}))
            failures.append(("Failed", f"installed, but GetInstalledCertificateIds does not list {names}"))
        outcome, reason = failures[0]
        if len(failures) > 1:
            reason += f" (+{len(failures) - 1} more)"
        await self._record(charger_id, plan, facts, answered, Attempt(
            outcome, reason, sent, held_fps, held_ids, unknown, refused))

    async def _record(self, charger_id: str, plan: ListenerPlan, facts: ChargerFacts,
                      answered: bool | None, attempt: Attempt) -> None:
        await asyncio.to_thread(self._record_sync, charger_id, plan, facts, answered, attempt,
                                self.clock())

    def _record_sync(self, charger_id: str, plan: ListenerPlan, facts: ChargerFacts,
                     answered: bool | None, attempt: Attempt, now: dt.datetime) -> None:
        outcome = attempt.outcome
        with session_scope(self.engine) as session:
            row = session.get(RolloverCharger, charger_id) or RolloverCharger(charger_id=charger_id)
            row.listener = plan.label
            if answered:
                row.store_max, row.store_used = facts.store_max, facts.store_used
                row.additional_root_check, row.facts_at = facts.additional_root_check, now
            if answered is False or attempt.refused:
                row.facts_at = None  # ask the charger again next time
            if attempt.held_fps is not None:
                row.held_json = json.dumps(sorted(attempt.held_fps))
                row.other_held = attempt.unknown
            row.installs_sent += attempt.sent
            row.last_attempt_at, row.updated_at = now, now
            row.last_result, row.last_reason = outcome, attempt.reason
            if outcome == "Accepted":
                row.state, row.failures, row.next_attempt_at = CHARGER_CONFIRMED, 0, None
                row.confirmed_at = now
                bundles = held_bundles(row)
                bundles.update(plan.targets)
                row.bundles_json = json.dumps(bundles, sort_keys=True)
                self._confirmed[charger_id] = Confirmed(bundles, attempt.held_ids)
            else:
                row.failures += 1
                if outcome in HARD_FAILURES:
                    row.state = CHARGER_FAILED
                    row.next_attempt_at = now + dt.timedelta(seconds=self.settings.retry_after)
                elif outcome == "timeout":
                    row.state = CHARGER_PENDING
                    backoff = min(self.settings.retry_after, TIMEOUT_BACKOFF_START * 2 ** (row.failures - 1))
                    row.next_attempt_at = now + dt.timedelta(seconds=backoff)
                else:  # offline: tried again when it connects
                    row.state = CHARGER_PENDING
                    row.next_attempt_at = None
            if outcome != "Accepted":
                self._confirmed.pop(charger_id, None)
            if row.next_attempt_at is not None:
                self._not_before[charger_id] = row.next_attempt_at
            else:
                self._not_before.pop(charger_id, None)
            session.add(row)
        if outcome == "Accepted":
            log.info("charger %s holds %s", charger_id,
                     ", ".join(f"{b} v{s}" for b, s in sorted(plan.targets.items())))
