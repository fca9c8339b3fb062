"""OCPP 1.6J central-system handlers: connection-level messages, no charging business logic.

Frames reach these handlers through dispatch.FrameGuard (pre-parsed, bounded). `self` is
positional-only: a payload key "self" lands in `**_` instead of colliding with it.
Heartbeat is answered by FrameGuard itself (see dispatch).
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action, GenericStatus, RegistrationStatus

from certd.ocpp.dispatch import FrameGuard
from certd.ocpp.session import ChargerSession, log, ocpp_timestamp, protocol_log
from certd.store.chargers import REGISTRATION_PENDING


class CentralSystemV16(FrameGuard, ChargePoint):
    """Answers BootNotification, Heartbeat (in FrameGuard), StatusNotification, SecurityEventNotification,
    SignCertificate (security extension; certd as the chargers' CA, see certd.ocpp.enrollment);
    other actions get a NotImplemented (1.6 action) or NotSupported (unknown) CallError."""

    def __init__(self, session: ChargerSession, connection: Any, response_timeout: float) -> None:
        super().__init__(session.charger_id, connection, response_timeout=response_timeout,
                         logger=protocol_log)
        self._guard(session)

    @on(Action.boot_notification)
    async def on_boot_notification(self, /, charge_point_vendor: str, charge_point_model: str,
                                   **info: Any) -> call_result.BootNotification:
        self.session.booted(charge_point_vendor, charge_point_model,
                            info.get("firmware_version"), info.get("charge_point_serial_number"))
        registration = await self.session.current_registration()
        status = (RegistrationStatus.pending if registration == REGISTRATION_PENDING
                  else RegistrationStatus.accepted)
        return call_result.BootNotification(
            current_time=ocpp_timestamp(), interval=self.session.heartbeat_interval, status=status,
        )

    @after(Action.boot_notification)
    def after_boot_notification(self, /, **_: Any) -> None:
        self.session.notify("booted")  # the answer is out: hooks may now send the charger requests

    @on(Action.status_notification)
    def on_status_notification(self, /, connector_id: int, error_code: str, status: str,
                               **_: Any) -> call_result.StatusNotification:
        log.debug("charger %s connector %s: %s (%s)", self.id, connector_id, status, error_code)
        return call_result.StatusNotification()

    @on(Action.security_event_notification)
    def on_security_event_notification(self, /, type: str, timestamp: str,
                                       **info: Any) -> call_result.SecurityEventNotification:
        self.session.security_event(type, timestamp, info.get("tech_info"))
        return call_result.SecurityEventNotification()

    @on(Action.sign_certificate)
    async def on_sign_certificate(self, /, csr: str, **_: Any) -> call_result.SignCertificate:
        enrollment = self.session.enrollment
        if enrollment is None:  # certd is not this fleet's CA
            return call_result.SignCertificate(status=GenericStatus.rejected)
        answer = await enrollment.on_csr(self.session, csr, None)
        return call_result.SignCertificate(
            status=GenericStatus.accepted if answer.accepted else GenericStatus.rejected)

    @after(Action.sign_certificate)
    def after_sign_certificate(self, /, csr: str, **_: Any) -> None:
        if self.session.enrollment is not None:  # the answer is out: CertificateSigned may follow
            self.session.enrollment.after_csr(self.session, csr)
