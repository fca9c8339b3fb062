"""One connected charger: what the handlers record, and the handle tasks use to send it requests.

Requests to a charger go one at a time (OCPP allows one outstanding CALL per
direction), through `ChargerSession.call`, from a task of their own -- never
from inside an `@on` handler, which would block the connection's read loop
until the call times out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from certd.store.types import utcnow

if TYPE_CHECKING:
    from ocpp.charge_point import ChargePoint

    from certd.ocpp.registry import RegistryWriter

log = logging.getLogger("certd.ocpp")
# The `ocpp` library logs every frame at INFO and handler errors with tracebacks here.
protocol_log = logging.getLogger("certd.ocpp.protocol")


# Called with (session, event) for "connected", "booted" (after the BootNotification answer
# went out) and "disconnected". A hook must not await the charger itself: it starts a task.
ChargerHook = Callable[["ChargerSession", str], None]


def ocpp_timestamp(now: dt.datetime | None = None) -> str:
    """RFC 3339 UTC with milliseconds and 'Z', as chargers expect."""
    now = now or utcnow()
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class ConnectedCharger:
    """A snapshot for status displays and for the tasks that pick chargers to talk to."""

    charger_id: str
    version: str
    listener: str
    address: str | None
    connected_at: dt.datetime
    registration: str


@dataclass(eq=False)
class ChargerSession:
    charger_id: str
    version: str  # "ocpp1.6" | "ocpp2.0.1" | "ocpp2.1"
    listener: str
    address: str | None
    registration: str  # accepted | pending
    heartbeat_interval: int
    writer: "RegistryWriter"
    connected_at: dt.datetime = field(default_factory=utcnow)
    charge_point: "ChargePoint | None" = None
    hooks: list[ChargerHook] = field(default_factory=list, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def snapshot(self) -> ConnectedCharger:
        return ConnectedCharger(
            self.charger_id, self.version, self.listener, self.address,
            self.connected_at, self.registration,
        )

    # -- called by the handlers --

    def seen(self) -> None:
        self.writer.seen(self.charger_id)

    def booted(self, vendor: str | None, model: str | None, firmware: str | None,
               serial: str | None) -> None:
        log.info("charger %s booted: %s %s firmware %s (%s)", self.charger_id, vendor, model,
                 firmware, self.version)
        self.writer.boot(self.charger_id, vendor=vendor, model=model,
                         firmware_version=firmware, serial_number=serial)

    def security_event(self, event_type: str, timestamp: str | None, tech_info: str | None) -> None:
        detail = f"{event_type} at {timestamp}" + (f": {tech_info[:200]}" if tech_info else "")
        self.writer.audit("security_event", self.charger_id, self.address, detail)

    def notify(self, event: str) -> None:
        """Tell the hooks (e.g. the trust rollover) that this charger connected, booted, left."""
        for hook in list(self.hooks):
            try:
                hook(self, event)
            except Exception:  # a broken hook must not take the connection down
                log.exception("charger %s: %s hook failed", self.charger_id, event)

    # -- used by tasks (e.g. installing CA certificates) --

    async def call(self, payload: Any, timeout: float | None = None) -> Any:
        """Send one request and return the charger's answer; raises the library's OCPPError
        subclasses for CallErrors (NotImplemented, ...) and TimeoutError."""
        if self.charge_point is None:
            raise RuntimeError(f"charger {self.charger_id} is not ready for requests")
        async with self._lock:
            call = self.charge_point.call(payload, suppress=False)
            if timeout is None:
                return await call
            return await asyncio.wait_for(call, timeout)
