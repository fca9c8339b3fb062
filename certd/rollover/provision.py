"""Talk certificates with one connected charger: install roots, read what it holds, read its limits.

The messages (and how OCPP 1.6 and 2.0.1 / 2.1 say the same thing differently) are
built and read in `certd.ocpp.calls`; this module sends them and classifies the
result. Every request goes through `ChargerSession.call` (one at a time per
charger) and its reply is one of: Accepted / Rejected / Failed (the charger said
so), NotSupported (a NotImplemented or NotSupported CallError), timeout, error (any
other CallError, a malformed answer or an unexpected status), offline (no connection).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from certd.ocpp import calls
from certd.ocpp.calls import HashData

if TYPE_CHECKING:
    from certd.ocpp.service import OcppService

log = logging.getLogger("certd.ocpp.provision")

Outcome = Literal["Accepted", "Rejected", "Failed", "NotSupported", "timeout", "error", "offline"]


@dataclass(frozen=True)
class Reply:
    outcome: Outcome
    detail: str | None = None
    value: Any = None  # Accepted: the message's version-neutral answer (see `certd.ocpp.calls`)

    @property
    def ok(self) -> bool:
        return self.outcome == "Accepted"


@dataclass(frozen=True)
class ChargerFacts:
    """What a charger says about its certificate store (None: it did not say)."""

    store_max: int | None = None
    store_used: int | None = None
    additional_root_check: bool | None = None
    notes: tuple[str, ...] = ()  # why it did not say; empty when it answered

    @property
    def answered(self) -> bool:
        """Whether GetConfiguration / GetVariables was answered (`notes` only says why not)."""
        return not self.notes


@dataclass(frozen=True)
class Installed:
    reply: Reply
    hash_data: tuple[HashData, ...] = field(default_factory=tuple)


class Provisioner:
    """Sends certificate requests to chargers connected to an `OcppService`."""

    def __init__(self, service: "OcppService", timeout: float) -> None:
        self.service = service
        self.timeout = timeout

    async def send(self, charger_id: str, request: calls.Request[Any]) -> Reply:
        """One request; CallErrors, timeouts and lost connections become a `Reply`, an answer
        becomes an Accepted one carrying `request.read(answer)`."""
        from ocpp import exceptions as ocpp_errors
        from websockets.exceptions import ConnectionClosed

        action = request.action
        try:
            value = await self.service.call(charger_id, request.payload, self.timeout)
        except (ocpp_errors.NotImplementedError, ocpp_errors.NotSupportedError) as exc:
            return Reply("NotSupported", f"{action}: {type(exc).__name__} ({exc.description})")
        except ocpp_errors.OCPPError as exc:
            return Reply("error", f"{action}: {type(exc).__name__} ({exc.description})")
        except (TimeoutError, asyncio.TimeoutError):
            return Reply("timeout", f"{action}: no answer within {self.timeout:.0f}s")
        except (ConnectionClosed, LookupError, RuntimeError, OSError) as exc:
            return Reply("offline", f"{action}: {exc}")
        try:
            answer = request.read(value)
        except (AttributeError, TypeError, ValueError) as exc:  # a reply the schema let through oddly
            return Reply("error", f"{action}: malformed answer ({type(exc).__name__})")
        return Reply("Accepted", None, answer)

    def _version(self, charger_id: str) -> str | None:
        session = self.service.charger(charger_id)
        return session.version if session is not None else None

    async def install(self, charger_id: str, pem: str) -> Reply:
        """InstallCertificate of one root PEM; outcome Accepted / Rejected / Failed / ..."""
        version = self._version(charger_id)
        if version is None:
            return Reply("offline", "InstallCertificate: not connected")
        reply = await self.send(charger_id, calls.install_certificate(version, pem))
        if not reply.ok:
            return reply
        answer: calls.InstallAnswer = reply.value
        if answer.status == "Accepted":
            return Reply("Accepted", answer.detail)
        if answer.status in ("Rejected", "Failed"):
            return Reply(answer.status, answer.detail or f"the charger answered {answer.status}")  # type: ignore[arg-type]
        return Reply("error", f"InstallCertificate: unexpected status {answer.status!r}")

    async def installed(self, charger_id: str) -> Installed:
        """GetInstalledCertificateIds for CSMS roots; NotFound is an empty, accepted answer."""
        version = self._version(charger_id)
        if version is None:
            return Installed(Reply("offline", "GetInstalledCertificateIds: not connected"))
        reply = await self.send(charger_id, calls.get_installed_certificate_ids(version))
        if not reply.ok:
            return Installed(reply)
        answer: calls.InstalledIds = reply.value
        if answer.status == "NotFound":
            return Installed(Reply("Accepted", "none installed"), ())
        if answer.status != "Accepted":
            return Installed(Reply("error", f"GetInstalledCertificateIds: status {answer.status!r}"))
        return Installed(reply, answer.hash_data)

    async def facts(self, charger_id: str) -> ChargerFacts:
        """Store limit, count and the cross-sign rule, when the charger tells them."""
        version = self._version(charger_id)
        if version is None:
            return ChargerFacts(notes=("not connected",))
        request = calls.certificate_store_settings(version)
        reply = await self.send(charger_id, request)
        if not reply.ok:
            return ChargerFacts(notes=(f"{request.action}: {reply.outcome} {reply.detail or ''}".strip(),))
        settings: calls.StoreSettings = reply.value
        return ChargerFacts(settings.store_max, settings.store_used, settings.additional_root_check)
