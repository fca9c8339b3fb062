"""Charger certificates over OCPP: answer SignCertificate, sign, deliver, move to profile 3.

The `@on("SignCertificate")` handlers (v16.py, v201.py) await `Enrollment.on_csr`: one
worker-thread trip reads the charger's standing and checks the CSR
(`certd.chargerca.csr`), and the handler answers Accepted or Rejected with that. Their
`@after` handlers call `after_csr`, which starts a task: sign (worker thread, the CA key
stays in this process's memory), record the certificate, then send CertificateSigned
from that task -- never from the handler, which would hold the read loop.

Store writes go through one loop-side lock, the certificates and delivery answers of many
chargers in one transaction (`certd.ocpp.group_commit`): hundreds of chargers asking at
once sign in parallel threads and are recorded in a few batches.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from certd.chargerca import authority, csr, records
from certd.config.charger_ca import ChargerCaConfig
from certd.errors import CertdError
from certd.ocpp import calls
from certd.ocpp.group_commit import GroupCommit
from certd.ocpp.logsafe import printable
from certd.tasks import cancel_all

if TYPE_CHECKING:
    from certd.ocpp.session import ChargerSession

log = logging.getLogger("certd.chargerca")

SEND_OUTCOMES = ("Accepted", "Rejected", "NotSupported", "timeout", "error", "offline")


@dataclass(frozen=True)
class CsrAnswer:
    accepted: bool
    reason: str | None = None
    code: str | None = None  # 2.x statusInfo.reasonCode


@dataclass(frozen=True)
class Sent:
    """What became of one request to a charger (see `send`)."""

    outcome: str  # one of SEND_OUTCOMES
    detail: str | None = None
    value: Any = None


async def send(session: "ChargerSession", request: calls.Request[Any], timeout: float) -> Sent:
    """One request over the charger's session; errors become an outcome, not an exception."""
    from ocpp import exceptions as ocpp_errors
    from websockets.exceptions import ConnectionClosed

    action = request.action
    try:
        value = await session.call(request.payload, timeout)
    except (ocpp_errors.NotImplementedError, ocpp_errors.NotSupportedError) as exc:
        return Sent("NotSupported", f"{action}: {type(exc).__name__}")
    except ocpp_errors.OCPPError as exc:
        return Sent("error", f"{action}: {type(exc).__name__} ({printable(exc.description, 80)})")
    except (TimeoutError, asyncio.TimeoutError):
        return Sent("timeout", f"{action}: no answer within {timeout:.0f}s")
    except (ConnectionClosed, RuntimeError, OSError) as exc:
        return Sent("offline", f"{action}: {type(exc).__name__}")
    try:
        answer = request.read(value)
    except (AttributeError, TypeError, ValueError) as exc:
        return Sent("error", f"{action}: malformed answer ({type(exc).__name__})")
    status = getattr(answer, "status", None)
    if status is None or status == "Accepted":
        return Sent("Accepted", getattr(answer, "detail", None), answer)
    detail = getattr(answer, "detail", None)
    return Sent("Rejected", f"{action}: {printable(status, 40)}" + (f" ({printable(detail, 120)})" if detail else ""),
                answer)


class Enrollment:
    """Signs CSRs for one OcppService (its loop) with the issuing CA `ca()` returns."""

    def __init__(self, settings: ChargerCaConfig, engine: sa.Engine, ca: Callable[[], authority.IssuingCa | None],
                 *, call_timeout: float, clock: Callable[[], dt.datetime],
                 listener_profile: Callable[[str], int]) -> None:
        self.settings = settings
        self.engine = engine
        self.ca = ca
        self.call_timeout = call_timeout
        self.clock = clock
        self.listener_profile = listener_profile
        self.store_lock = asyncio.Lock()
        self.store_issued: GroupCommit[records.ToStore, records.Issued] = GroupCommit(
            lambda items: records.store_issued_batch(engine, items), self.store_lock)
        self.record_delivery: GroupCommit[records.Delivery, str] = GroupCommit(
            lambda items: records.record_deliveries(engine, items, settings, clock()), self.store_lock)
        self._accepted: dict[str, tuple[str, csr.Accepted]] = {}  # charger -> (its last CSR, checked)
        self.tasks: set[asyncio.Task[None]] = set()
        self.issued = 0  # certificates this process signed (bench, tests)

    # -- SignCertificate (the handler awaits this; it must answer quickly) --

    async def on_csr(self, session: "ChargerSession", pem: str, certificate_type: str | None) -> CsrAnswer:
        if self.ca() is None:
            return self._refused(session, csr.Refused("the charger CA is not loaded", "NotReady"), None)
        decision = await asyncio.to_thread(self._check, session.charger_id, pem, certificate_type)
        if isinstance(decision, csr.Refused):
            return self._refused(session, decision, None)
        self._accepted[session.charger_id] = (pem, decision)
        session.writer.audit("csr_accepted", session.charger_id, session.address,
                             f"{decision.key_type} CSR sha256 {decision.csr_sha256[:16]}")
        return CsrAnswer(True)

    def _check(self, charger_id: str, pem: str, certificate_type: str | None) -> csr.Decision:
        standing = records.standing(self.engine, charger_id)
        return csr.check_csr(pem, charger_id, standing, self.settings.organization, certificate_type)

    def _refused(self, session: "ChargerSession", refused: csr.Refused, digest: str | None) -> CsrAnswer:
        session.writer.audit("csr_refused", session.charger_id, session.address, refused.reason)
        log.warning("charger %s: CSR refused: %s", session.charger_id, refused.reason)
        task = asyncio.get_running_loop().create_task(self._record_refusal(session, refused.reason))
        self._keep(task)
        return CsrAnswer(False, refused.reason, refused.code)

    async def _record_refusal(self, session: "ChargerSession", reason: str) -> None:
        async with self.store_lock:
            await asyncio.to_thread(records.record_refusal, self.engine, session.charger_id, reason,
                                    listener=session.listener, version=session.version)

    def after_csr(self, session: "ChargerSession", pem: str) -> None:
        """The Accepted answer is out: sign and deliver from a task of its own."""
        pending = self._accepted.pop(session.charger_id, None)
        accepted = pending[1] if pending is not None and pending[0] == pem else None
        if accepted is not None:
            self._keep(asyncio.get_running_loop().create_task(
                self._sign_and_deliver(session, accepted), name=f"certd-sign {session.charger_id}"))

    def _keep(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _sign_and_deliver(self, session: "ChargerSession", accepted: csr.Accepted) -> None:
        ca = self.ca()
        if ca is None:
            return
        now = self.clock()
        try:
            leaf = await asyncio.to_thread(
                authority.sign_leaf, ca, accepted.csr.public_key(), session.charger_id,  # type: ignore[arg-type]
                self.settings.organization, self.settings.leaf_validity_days, now)
            issued = await self.store_issued(records.ToStore(
                ca, leaf, session.charger_id, accepted.key_type, now, session.listener, session.version,
                accepted.csr_sha256))
        except Exception as exc:  # noqa: BLE001 - the charger asks again; say why without secrets
            log.error("charger %s: signing its certificate failed: %s", session.charger_id,
                      exc if isinstance(exc, CertdError) else type(exc).__name__)  # certd's words only
            return
        self.issued += 1
        session.writer.audit("certificate_issued", session.charger_id, session.address,
                             f"serial {issued.cert.serial} until {issued.cert.not_after:%Y-%m-%d %H:%M} UTC")
        log.info("charger %s: certificate serial %s issued (until %s)", session.charger_id,
                 issued.cert.serial, issued.cert.not_after.isoformat())
        await self.deliver(session, issued.cert.serial, issued.chain_pem)

    async def deliver(self, session: "ChargerSession", serial: str, chain_pem: str) -> str:
        """CertificateSigned, then its answer recorded; returns the outcome."""
        sent = await send(session, calls.certificate_signed(session.version, chain_pem), self.call_timeout)
        move_after = (sent.outcome == "Accepted" and self.settings.move is not None
                      and self.listener_profile(session.listener) == 2)
        await self.record_delivery(records.Delivery(serial, sent.outcome, sent.detail, move_after))
        kind = {"Accepted": "certificate_accepted", "Rejected": "certificate_rejected"}.get(
            sent.outcome, "certificate_not_delivered")
        session.writer.audit(kind, session.charger_id, session.address,
                             f"serial {serial}" + (f": {sent.detail}" if sent.detail else ""))
        if sent.outcome != "Accepted":
            log.warning("charger %s: CertificateSigned for serial %s: %s %s", session.charger_id, serial,
                        sent.outcome, sent.detail or "")
        elif move_after:
            await self.move(session)
        return sent.outcome

    async def move(self, session: "ChargerSession") -> bool:
        """Point the charger at the profile-3 listener (see `[ocpp.charger_ca.move]`)."""
        move = self.settings.move
        assert move is not None
        steps: list[calls.Request[Any]]
        if session.version == calls.V16:
            steps = [calls.change_configuration(session.version, move.url_key_16, move.url + session.charger_id)] \
                if move.url_key_16 else []
            steps.append(calls.change_configuration(session.version, "SecurityProfile", "3"))
        else:
            steps = [calls.set_network_profile(session.version, move.configuration_slot, move.url, 3,
                                               move.ocpp_interface, move.message_timeout)]
        result, done = "moved to security profile 3", True
        for request in steps:
            sent = await send(session, request, self.call_timeout)
            if sent.outcome != "Accepted":
                result, done = f"move to profile 3: {sent.outcome} {sent.detail or ''}".strip(), False
                break
        if done and session.version != calls.V16:
            done, result = await self._prioritize_slot(session, move.configuration_slot)
        async with self.store_lock:
            await asyncio.to_thread(records.record_move, self.engine, session.charger_id, result, done,
                                    self.settings, self.clock())
        session.writer.audit("profile_move", session.charger_id, session.address, result)
        log.log(logging.INFO if done else logging.WARNING, "charger %s: %s", session.charger_id, result)
        return done

    async def _prioritize_slot(self, session: "ChargerSession", slot: int) -> tuple[bool, str]:
        """2.x: the new slot first in NetworkConfigurationPriority, the previous ones after it."""
        variable = calls.NETWORK_PRIORITY_2X
        got = await send(session, calls.get_variables(session.version, [variable]), self.call_timeout)
        previous = str(got.value.get(variable, "")) if got.outcome == "Accepted" and got.value else ""
        order = [str(slot)] + [s.strip() for s in previous.split(",") if s.strip() and s.strip() != str(slot)]
        sent = await send(session, calls.set_variables(session.version, {variable: ",".join(order)}),
                          self.call_timeout)
        status = sent.value.get(variable) if sent.outcome == "Accepted" and sent.value else None
        if status not in ("Accepted", "RebootRequired"):
            return False, f"move to profile 3: NetworkConfigurationPriority {status or sent.outcome}"
        return True, f"moved to security profile 3 (slot {slot} first: {','.join(order)})"

    async def close(self) -> None:
        await cancel_all(list(self.tasks))

