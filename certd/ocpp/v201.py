"""OCPP 2.0.1 (and 2.1, same messages here) CSMS handlers: connection-level messages and
SignCertificate (certd as the chargers' CA).

Frames reach these handlers through dispatch.FrameGuard; `self` is positional-only (see v16).
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import after, on
from ocpp.v201 import ChargePoint as ChargePointV201
from ocpp.v21 import ChargePoint as ChargePointV21

from certd.ocpp.dispatch import FrameGuard
from certd.ocpp.session import ChargerSession, log, ocpp_timestamp, protocol_log
from certd.store.chargers import REGISTRATION_PENDING


class _Handlers2x:
    """Shared by 2.0.1 and 2.1; `self._call_result` is the version's own module."""

    session: ChargerSession
    id: str
    _call_result: Any

    @on("BootNotification")
    async def on_boot_notification(self, /, charging_station: dict[str, Any], reason: str,
                                   **_: Any) -> Any:
        self.session.booted(
            charging_station.get("vendor_name"), charging_station.get("model"),
            charging_station.get("firmware_version"), charging_station.get("serial_number"),
        )
        registration = await self.session.current_registration()
        status = "Pending" if registration == REGISTRATION_PENDING else "Accepted"
        return self._call_result.BootNotification(
            current_time=ocpp_timestamp(), interval=self.session.heartbeat_interval, status=status,
        )

    @after("BootNotification")
    def after_boot_notification(self, /, **_: Any) -> None:
        self.session.notify("booted")  # the answer is out: hooks may now send the charger requests

    @on("StatusNotification")
    def on_status_notification(self, /, timestamp: str, connector_status: str, evse_id: int,
                               connector_id: int, **_: Any) -> Any:
        log.debug("charger %s evse %s connector %s: %s", self.id, evse_id, connector_id,
                  connector_status)
        return self._call_result.StatusNotification()

    @on("NotifyEvent")
    def on_notify_event(self, /, generated_at: str, seq_no: int, event_data: list[dict[str, Any]],
                        **_: Any) -> Any:
        log.debug("charger %s: %d event(s), seq %s", self.id, len(event_data), seq_no)
        return self._call_result.NotifyEvent()

    @on("SecurityEventNotification")
    def on_security_event_notification(self, /, type: str, timestamp: str, **info: Any) -> Any:
        self.session.security_event(type, timestamp, info.get("tech_info"))
        return self._call_result.SecurityEventNotification()

    @on("SignCertificate")
    async def on_sign_certificate(self, /, csr: str, **info: Any) -> Any:
        """certd as the chargers' CA (certd.ocpp.enrollment); V2GCertificate is refused."""
        enrollment = self.session.enrollment
        if enrollment is None:
            return self._call_result.SignCertificate(
                status="Rejected", status_info={"reason_code": "NotSupported",
                                                "additional_info": "this CSMS signs no certificates"})
        answer = await enrollment.on_csr(self.session, csr, info.get("certificate_type"))
        if answer.accepted:
            return self._call_result.SignCertificate(status="Accepted")
        return self._call_result.SignCertificate(
            status="Rejected", status_info={"reason_code": (answer.code or "Rejected")[:20],
                                            "additional_info": (answer.reason or "")[:512]})

    @after("SignCertificate")
    def after_sign_certificate(self, /, csr: str, **_: Any) -> None:
        if self.session.enrollment is not None:  # the answer is out: CertificateSigned may follow
            self.session.enrollment.after_csr(self.session, csr)


class CentralSystemV201(_Handlers2x, FrameGuard, ChargePointV201):
    def __init__(self, session: ChargerSession, connection: Any, response_timeout: float) -> None:
        ChargePointV201.__init__(self, session.charger_id, connection,
                                 response_timeout=response_timeout, logger=protocol_log)
        self._guard(session)


class CentralSystemV21(_Handlers2x, FrameGuard, ChargePointV21):
    def __init__(self, session: ChargerSession, connection: Any, response_timeout: float) -> None:
        ChargePointV21.__init__(self, session.charger_id, connection,
                                response_timeout=response_timeout, logger=protocol_log)
        self._guard(session)
