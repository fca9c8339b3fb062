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

from certd.store.chargers import REGISTRATION_PENDING
from certd.store.types import utcnow

if TYPE_CHECKING:
    from ocpp.charge_point import ChargePoint

    from certd.ocpp.charger_registry import RegistryWriter

log = logging.getLogger("certd.ocpp")
# The `ocpp` library logs every frame at INFO and handler errors with tracebacks here.
protocol_log = logging.getLogger("certd.ocpp.protocol")


# Called with (session, event) for "connected", "booted" (after the BootNotification answer
# went out) and "disconnected". A hook must not await the charger itself: it starts a task.
ChargerHook = Callable[["ChargerSession", str], None]


def printable(value: object) -> str:
    """A charger-supplied string as one log line: control characters escaped (no forged lines)."""
    text = "" if value is None else str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


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
        log.info("charger %s booted: %s %s firmware %s (%s)", self.charger_id, printable(vendor),
                 printable(model), printable(firmware), self.version)
        self.writer.boot(self.charger_id, vendor=vendor, model=model,
                         firmware_version=firmware, serial_number=serial)

    def security_event(self, event_type: str, timestamp: str | None, tech_info: str | None) -> None:
        detail = (f"{printable(event_type)} at {printable(timestamp)}"
                  + (f": {printable(tech_info[:200])}" if tech_info else ""))
        self.writer.audit("security_event", self.charger_id, self.address, detail)

    async def current_registration(self) -> str:
        """A pending charger may have been approved (`certd chargers approve`) while connected:
        ask the store again at each BootNotification until it is accepted."""
        if self.registration == REGISTRATION_PENDING:
            from certd.ocpp import charger_registry

            record = await asyncio.to_thread(charger_registry.lookup, self.writer.engine, self.charger_id)
            if record is not None:
                self.registration = record.registration
        return self.registration

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
            call = asyncio.ensure_future(self.charge_point.call(payload, suppress=False))
            # The library's wait for the answer does not notice a closed socket: race it against
            # the close, so a charger that went away is "offline" now, not a timeout later.
            closed = asyncio.ensure_future(self.charge_point._connection.wait_closed())  # noqa: SLF001
            try:
                done, _ = await asyncio.wait({call, closed}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
            if call in done:
                return call.result()
            call.cancel()
            if closed in done:
                from websockets.exceptions import ConnectionClosedError

                raise ConnectionClosedError(None, None)
            raise TimeoutError(f"no answer from charger {self.charger_id} within {timeout}s")
