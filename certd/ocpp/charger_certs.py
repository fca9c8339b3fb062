"""The charger CA inside an OcppService: its CA loaded, and connected chargers kept renewed.

    certs = ChargerCertService(config, engine, service)   # OcppService builds it when
    await certs.start()                                  # [ocpp.charger_ca] is configured
    ...
    await certs.close()

`start` creates or imports the CA the first time (`certd.chargerca.ca_store.ensure_ca`)
and loads the issuing CA's key into memory. Then, every `check_interval` seconds and
right after a charger's BootNotification, each connected charger gets what
`certd.chargerca.plan` says it needs: a CertificateSigned delivered again, the move to
profile 3, or a renewal trigger (2.0.1 TriggerMessage SignChargingStationCertificate,
1.6 ExtendedTriggerMessage SignChargePointCertificate), each from a task of its own,
at most CONCURRENCY at once, with the back-off recorded in the store. A CA replaced
by another process (`certd charger-ca init --replace`) is noticed at the same look:
the new key is loaded and profile-3 listeners trust the new certificate too.

Every `sweep_interval` seconds `certd.chargerca.sweep` looks at all charger certificates,
connected or not (last-tenth alerts through the notify hook, the CRL file), in a worker
thread under a store lease, so one process of several sharing the store does it per
round. It runs here rather than in `certd.runtime.jobs` so that `certd serve` has it too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from certd.chargerca import authority, ca_store, records, sweep
from certd.chargerca.plan import Work, plan
from certd.config import Config
from certd.errors import CertdError
from certd.ocpp import calls
from certd.ocpp.enrollment import Enrollment, send
from certd.store import leases
from certd.store.types import utcnow
from certd.tasks import cancel_all

if TYPE_CHECKING:
    from certd.ocpp.service import OcppService
    from certd.ocpp.session import ChargerSession

log = logging.getLogger("certd.chargerca")

CONCURRENCY = 50
SWEEP_LEASE = "charger-certs"


class ChargerCertService:
    def __init__(self, config: Config, engine: sa.Engine, service: "OcppService", *,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        settings = config.ocpp.charger_ca
        assert settings is not None
        self.config = config
        self.settings = settings
        self.engine = engine
        self.service = service
        self.clock = clock
        self.ca: authority.IssuingCa | None = None
        self.enrollment = Enrollment(settings, engine, lambda: self.ca, call_timeout=config.ocpp.call_timeout,
                                     clock=clock, listener_profile=service.listener_profile)
        self._wake = asyncio.Event()
        self._soon: set[str] = set()
        self._all_wanted = False
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._semaphore = asyncio.Semaphore(CONCURRENCY)
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.triggers_sent = 0

    # -- lifecycle --

    async def prepare(self) -> None:
        """The CA exists and its key is loaded (before listeners build their trust)."""
        row = await asyncio.to_thread(ca_store.ensure_ca, self.engine, self.config, self.clock())
        self.ca = await asyncio.to_thread(ca_store.load_issuing, self.engine, self.config)
        log.info("charger CA %s (%s, until %s) signs charger certificates", row.subject,
                 row.fingerprint[:16], row.not_after.date().isoformat())

    async def start(self) -> None:
        self.service.add_charger_hook(self._on_charger_event)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="certd-charger-certs")
        self._sweeper = loop.create_task(self._sweep_periodically(), name="certd-charger-cert-sweep")

    async def close(self) -> None:
        self.service.remove_charger_hook(self._on_charger_event)
        await cancel_all([self._task, self._sweeper, *self._inflight.values()])
        self._task = self._sweeper = None
        self._inflight.clear()
        await self.enrollment.close()

    def kick(self, charger_id: str | None = None) -> None:
        """Look (at one charger, or all) soon."""
        if charger_id is not None:
            self._soon.add(charger_id)
        else:
            self._all_wanted = True
        self._wake.set()

    def _on_charger_event(self, session: "ChargerSession", event: str) -> None:
        if event == "booted":
            self.kick(session.charger_id)

    async def _run(self) -> None:
        """A look at every connected charger each check_interval (however many boots come in
        between), and at a booted charger's own at once."""
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_full - loop.time()))
            except TimeoutError:
                pass
            self._wake.clear()
            only, self._soon = self._soon, set()
            full = self._all_wanted or loop.time() >= next_full
            if full:
                self._all_wanted, next_full = False, loop.time() + self.settings.check_interval
            try:
                await self.check_ca()
                await self.check(None if full else only)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one failed look must not end the service
                log.exception("looking at charger certificates failed; trying again later")

    async def _sweep_periodically(self) -> None:
        alert = sweep.notify_hook_alert(self.config)
        while True:
            try:
                await asyncio.to_thread(self.sweep_once, alert)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
                log.error("charger certificate sweep failed: %s", exc if isinstance(exc, CertdError)
                          else type(exc).__name__)
            await asyncio.sleep(self.settings.sweep_interval)

    def sweep_once(self, alert: sweep.Alert | None = None) -> sweep.SweepReport | None:
        """One sweep under the store lease (worker thread); None when another process holds it."""
        try:
            with leases.held(self.engine, leases.job_lease(SWEEP_LEASE), "certd charger CA"):
                return sweep.sweep(self.engine, self.config, self.clock(), alert)
        except leases.LeaseBusy:
            return None

    # -- the CA --

    async def check_ca(self) -> bool:
        """Load the issuing CA again when another process replaced it; True when it changed."""
        row = await asyncio.to_thread(ca_store.active_issuing, self.engine)
        if row is None or (self.ca is not None and row.fingerprint == self.ca.fingerprint):
            return False
        self.ca = await asyncio.to_thread(ca_store.load_issuing, self.engine, self.config)
        log.warning("the charger CA changed to %s (%s): chargers are asked for new certificates",
                    row.subject, row.fingerprint[:16])
        await self.service.reload_client_trust()
        return True

    # -- connected chargers --

    async def check(self, only: set[str] | None = None) -> int:
        """Start the work `plan` gives for connected chargers (all, or `only`); returns how many."""
        sessions = self.service.shared.sessions
        ids = [cid for cid in (only if only is not None else list(sessions))
               if cid in sessions and cid not in self._inflight]
        if not ids or self.ca is None:
            return 0
        factory = {cid for cid in ids if getattr(sessions[cid], "client_cert", None) is not None
                   and not sessions[cid].client_cert.issued_by_certd}
        movable = {cid for cid in ids if self.settings.move is not None
                   and self.service.listener_profile(sessions[cid].listener) == 2}
        work = await asyncio.to_thread(self._plan, ids, self.clock(), self.ca.fingerprint, factory, movable)
        for item in work:
            if item.charger_id in self._inflight or item.charger_id not in sessions:
                continue
            task = asyncio.get_running_loop().create_task(self._do(item), name=f"certd-cert {item.charger_id}")
            self._inflight[item.charger_id] = task
            task.add_done_callback(lambda _t, cid=item.charger_id: self._inflight.pop(cid, None))
        return len(work)

    def _plan(self, ids: Sequence[str], now: dt.datetime, active_ca: str, factory: set[str],
              movable: set[str]) -> list[Work]:
        certs = records.certificates_of(self.engine, ids)
        renewals = records.renewals(self.engine, ids)
        found = []
        for charger_id in ids:
            item = plan(charger_id, certs.get(charger_id, []), renewals.get(charger_id), now,
                        active_ca=active_ca, enroll=self.settings.auto_enroll,
                        factory_certificate=charger_id in factory, move_possible=charger_id in movable)
            if item is not None:
                found.append(item)
        return found

    async def wait_idle(self, timeout: float) -> bool:
        """Until no work and no signing is in flight (tests, bench)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if not self._inflight and not self.enrollment.tasks:
                return True
            await asyncio.sleep(0.02)
        return False

    async def _do(self, work: Work) -> None:
        session = self.service.charger(work.charger_id)
        if session is None:
            return
        async with self._semaphore:
            if work.kind == "deliver":
                assert work.serial is not None
                chain = await asyncio.to_thread(ca_store.delivery_chain, self.engine, work.serial)
                await self.enrollment.deliver(session, work.serial, chain)
            elif work.kind == "move":
                await self.enrollment.move(session)
            else:
                await self.trigger(session, work.reason)

    async def trigger(self, session: "ChargerSession", reason: str) -> str:
        """Ask the charger for a CSR; the outcome and the back-off go to the store."""
        sent = await send(session, calls.trigger_certificate_request(session.version),
                          self.enrollment.call_timeout)
        self.triggers_sent += 1
        result = f"CSR trigger ({reason}): {sent.outcome}" + (f" {sent.detail}" if sent.detail else "")
        async with self.enrollment.store_lock:
            retry_at = await asyncio.to_thread(records.record_trigger, self.engine, session.charger_id,
                                               result, self.settings, self.clock())
        session.writer.audit("certificate_renewal_requested", session.charger_id, session.address, result)
        level = logging.INFO if sent.outcome == "Accepted" else logging.WARNING
        log.log(level, "charger %s: %s; next request not before %s", session.charger_id, result,
                retry_at.isoformat(timespec="seconds"))
        return sent.outcome
