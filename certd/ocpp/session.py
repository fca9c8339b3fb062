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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from certd.ocpp import logsafe
from certd.ocpp.frames import Limits
from certd.ocpp.logsafe import printable
from certd.store.chargers import REGISTRATION_PENDING
from certd.store.types import utcnow

if TYPE_CHECKING:
    from ocpp.charge_point import ChargePoint

    from certd.chargerca.identity import PeerCertificate
    from certd.ocpp.charger_registry import RegistryWriter
    from certd.ocpp.enrollment import Enrollment

log = logging.getLogger("certd.ocpp")
# certd's ChargePoints log each frame's type, action and size at INFO here; what the `ocpp`
# library itself logs here (handler errors) passes logsafe's filter: one bounded line.
protocol_log = logging.getLogger("certd.ocpp.protocol")
logsafe.install()

# A connection's first rejected frames are logged at WARNING, the rest at DEBUG (all counted):
# a charger that sends garbage in a loop must not flood the log.
WARN_REJECTIONS = 20
# Charger strings stored in the registry (vendor, model, ...): escaped, so a NUL cannot fail
# the batched write (PostgreSQL text refuses it) and `certd chargers list` prints no controls.
MAX_STORED = 200


# Called with (session, event) for "connected", "booted" (after the BootNotification answer
# went out) and "disconnected". A hook must not await the charger itself: it starts a task.
ChargerHook = Callable[["ChargerSession", str], None]


def storable(value: str | None) -> str | None:
    """A charger-supplied string as the registry keeps it: as sent when it is printable,
    else escaped (bounded either way; the schema already bounds a valid one)."""
    if value is None or (value.isprintable() and len(value) <= MAX_STORED):
        return value
    return printable(value, MAX_STORED)


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
    frame_limits: Limits = field(default_factory=lambda: Limits(64 * 1024))
    # Refused frames per reason (frames.py's and dispatch's names): this connection's, and the
    # listener's running total the session adds to.
    rejections: Counter[str] = field(default_factory=Counter, repr=False)
    listener_rejections: Counter[str] | None = field(default=None, repr=False)
    # Security profile 3: the client certificate the charger connected with (else None).
    client_cert: "PeerCertificate | None" = None
    # The charger CA's SignCertificate handling (None: certd is not the chargers' CA).
    enrollment: "Enrollment | None" = field(default=None, repr=False)
    _loud_rejections: int = field(default=0, repr=False)
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
        self.writer.boot(self.charger_id, vendor=storable(vendor), model=storable(model),
                         firmware_version=storable(firmware), serial_number=storable(serial))

    def security_event(self, event_type: str, timestamp: str | None, tech_info: str | None) -> None:
        detail = (f"{printable(event_type)} at {printable(timestamp)}"
                  + (f": {printable(tech_info)}" if tech_info else ""))
        self.writer.audit("security_event", self.charger_id, self.address, detail)

    def count(self, reason: str) -> None:
        """One more refused frame (or failed connection) of `reason`, here and on the listener."""
        self.rejections[reason] += 1
        if self.listener_rejections is not None:
            self.listener_rejections[reason] += 1

    def rejected(self, reason: str, detail: str, size: int | None, outcome: str,
                 unique_id: str | None = None, quiet: bool = False) -> None:
        """Count a refused frame and log it as one line: its size, never its content.
        `detail` is certd's wording (charger values in it already escaped)."""
        self.count(reason)
        loud = 0  # the how-many-th warned refusal this is (quiet ones are never warned)
        if not quiet:
            self._loud_rejections += 1
            loud = self._loud_rejections
        level = logging.WARNING if 0 < loud <= WARN_REJECTIONS else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        frame = "a frame" if size is None else f"a {size}-byte frame"
        message_id = "" if unique_id is None else f", message id {printable(unique_id, 40)}"
        hush = ("; further refusals on this connection are logged at debug"
                if loud == WARN_REJECTIONS else "")
        log.log(level, "charger %s: refused %s (%s: %s%s); %s%s", self.charger_id, frame,
                reason, detail, message_id, outcome, hush)

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
