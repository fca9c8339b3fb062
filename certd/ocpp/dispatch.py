"""The read loop of certd's ChargePoints: every frame pre-parsed before the library sees it.

`FrameGuard` comes first in the MRO of the version classes (v16.py, v201.py) and
replaces the `ocpp` library's `start`/`route_message`: a frame goes through
`frames.parse`; a rejection is answered (CALLERROR, or a close where no message id
can be read), counted on the session and logged as one bounded line; a CALL with an
action certd has no handler for is answered here (the library's own path for it raises
and logs a traceback, and for OCPP 2.1 answers nothing); a CALLRESULT/CALLERROR is
passed on only when a call of ours waits for that id (else the library's queue would
keep it and log it whole at the next call). What the library then does with a valid
CALL (schema check, handler) is its own; its OCPPErrors are answered here with the
version's spelling of the code and without the frame echoed in errorDetails.

Heartbeat, most of a fleet's traffic (every charger, every interval), is answered
here in every version: its answer is the current time whatever the payload says,
and the library's generic path (the handler's signature inspected, a dataclass
converted and its keys translated at every call) cost 26 µs of the loop's CPU per
heartbeat where this costs 7.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult
from websockets.exceptions import ConnectionClosed

from certd.ocpp import frames
from certd.ocpp.logsafe import printable, safe_text
from certd.ocpp.session import ocpp_timestamp, protocol_log

if TYPE_CHECKING:
    from certd.ocpp.session import ChargerSession

# OCPP 2.0.1 limits errorDescription to 255 characters; details carry a short cause.
MAX_DESCRIPTION = 255
MAX_CAUSE = 200
# Close codes websockets itself sends on a frame certd never sees.
_WEBSOCKETS_REFUSALS = {frames.CLOSE_INVALID_DATA: ("not_utf8", "a text frame that is not UTF-8"),
                        frames.CLOSE_TOO_BIG: ("too_big", "over max_message_size")}
HEARTBEAT = "Heartbeat"
_MESSAGE_TYPES = {frames.CALL: "CALL", frames.CALLRESULT: "CALLRESULT",
                  frames.CALLERROR: "CALLERROR"}


@functools.lru_cache(maxsize=None)
def known_actions(library_version: str) -> frozenset[str]:
    """The actions the version defines (NotImplemented for those, NotSupported for others)."""
    module = {"1.6": "ocpp.v16.enums", "2.0.1": "ocpp.v201.enums"}.get(library_version,
                                                                        "ocpp.v21.enums")
    return frozenset(action.value for action in importlib.import_module(module).Action)


def frame_size(raw: str | bytes) -> int:
    """Bytes on the wire (only computed for frames that are refused or logged)."""
    if isinstance(raw, str):
        return len(raw.encode("utf-8", "surrogatepass"))
    return len(raw)


class FrameGuard:
    """Mixed in before the library's ChargePoint; `_guard(session)` from the constructor."""

    # Provided by the library's ChargePoint:
    id: str
    route_map: dict[str, dict[str, Any]]
    _connection: Any
    _response_queue: asyncio.Queue[Any]
    _ocpp_version: str
    _unique_id_generator: Any
    _handle_call: Any

    session: "ChargerSession"
    _awaited_ids: set[str]
    _closed_by_guard: bool

    def _guard(self, session: "ChargerSession") -> None:
        self.session = session
        self._awaited_ids = set()
        self._closed_by_guard = False

    # -- reading --

    async def start(self) -> None:
        """The library's read loop without its INFO line that carries each raw frame."""
        try:
            while True:
                await self.route_message(await self._connection.recv())
        except ConnectionClosed:
            self._note_websockets_refusal()
            raise

    async def route_message(self, raw_msg: str | bytes) -> None:
        session = self.session
        session.seen()
        parsed = frames.parse(raw_msg, session.frame_limits, session.version)
        if isinstance(parsed, frames.Rejection):
            await self._refuse(parsed, frame_size(raw_msg))
            return
        if protocol_log.isEnabledFor(logging.INFO):  # INFO: what arrived, never its content
            protocol_log.info("charger %s: received %s %s, message id %s (%d bytes)", self.id,
                              _MESSAGE_TYPES[parsed.message_type_id],
                              printable(parsed.action or "", 64), printable(parsed.unique_id, 40),
                              frame_size(raw_msg))
        if parsed.message_type_id == frames.CALL:
            await self._dispatch_call(parsed, raw_msg)
        else:
            self._deliver_response(parsed, raw_msg)

    async def _dispatch_call(self, frame: frames.Frame, raw_msg: str | bytes) -> None:
        action, payload = frame.fields
        if action == HEARTBEAT:  # the payload is empty or customData: nothing to check or read
            await self._send(CallResult(frame.unique_id, {"currentTime": ocpp_timestamp()}).to_json())
            return
        handlers = self.route_map.get(action)
        if handlers is None or "_on_action" not in handlers:
            # An action of the version that certd does not handle (MeterValues, ...) is ordinary
            # traffic: counted, logged at debug. An action the version does not know is not.
            implemented_elsewhere = action in known_actions(self._ocpp_version)
            code = "NotImplemented" if implemented_elsewhere else "NotSupported"
            self.session.rejected("not_implemented" if implemented_elsewhere else "unknown_action",
                                  f"no handler for action {printable(action, 64)}",
                                  frame_size(raw_msg), f"answered CALLERROR {code}", frame.unique_id,
                                  quiet=implemented_elsewhere)
            await self._send_call_error(frame.unique_id, code, f"{code}: no handler for this action")
            return
        try:
            await self._handle_call(Call(frame.unique_id, action, payload))
        except OCPPError as error:  # schema validation (the library's own path logs a traceback)
            code = frames.error_code_for(self.session.version, error.code)
            self.session.rejected("invalid_payload", f"{printable(action, 64)} payload refused",
                                  frame_size(raw_msg), f"answered CALLERROR {code}", frame.unique_id)
            cause = (error.details or {}).get("cause") if isinstance(error.details, dict) else None
            await self._send_call_error(frame.unique_id, code, str(error.description),
                                        {"cause": safe_text(str(cause), MAX_CAUSE)} if cause else {})

    def _deliver_response(self, frame: frames.Frame, raw_msg: str | bytes) -> None:
        if frame.unique_id not in self._awaited_ids:
            self.session.rejected("unknown_response_id", "an answer to no call of ours",
                                  frame_size(raw_msg), "ignored", frame.unique_id)
            return
        self._awaited_ids.discard(frame.unique_id)  # one answer per call
        if frame.message_type_id == frames.CALLRESULT:
            message: Any = CallResult(frame.unique_id, frame.fields[0])
        else:
            message = CallError(frame.unique_id, *frame.fields)
        self._response_queue.put_nowait(message)

    # -- answering --

    async def _refuse(self, rejection: frames.Rejection, size: int) -> None:
        session = self.session
        if rejection.error_code is not None and rejection.unique_id is not None:
            session.rejected(rejection.reason, rejection.detail, size,
                             f"answered CALLERROR {rejection.error_code}", rejection.unique_id)
            await self._send_call_error(rejection.unique_id, rejection.error_code,
                                        f"frame refused: {rejection.detail}")
        elif rejection.close_code is not None:
            session.rejected(rejection.reason, rejection.detail, size,
                             f"closing with {rejection.close_code}", rejection.unique_id)
            self._closed_by_guard = True
            await self._connection.close(rejection.close_code, rejection.detail[:120])
        else:
            session.rejected(rejection.reason, rejection.detail, size, "ignored",
                             rejection.unique_id)

    async def _send_call_error(self, unique_id: str, code: str, description: str,
                               details: dict[str, Any] | None = None) -> None:
        error = CallError(unique_id, code, description[:MAX_DESCRIPTION], details or {})
        await self._send(error.to_json())

    async def _send(self, message: str) -> None:
        """The library's send without its INFO line that repeats echoed charger data."""
        if protocol_log.isEnabledFor(logging.INFO):
            protocol_log.info("charger %s: sending %d bytes", self.id, len(message))
        await self._connection.send(message)

    def _note_websockets_refusal(self) -> None:
        """Count a frame websockets refused itself (over max_message_size, invalid UTF-8)."""
        protocol = getattr(self._connection, "protocol", None)
        sent = getattr(protocol, "close_sent", None)
        if sent is None or self._closed_by_guard or sent.code not in _WEBSOCKETS_REFUSALS:
            return
        reason, detail = _WEBSOCKETS_REFUSALS[sent.code]
        self.session.rejected(reason, detail, None, f"closed with {sent.code} by websockets")

    # -- calling --

    async def call(self, payload: Any, suppress: bool = True, unique_id: str | None = None,
                   skip_schema_validation: bool = False) -> Any:
        """The library's call, with its message id registered so that its answer is let in."""
        unique_id = unique_id if unique_id is not None else str(self._unique_id_generator())
        self._awaited_ids.add(unique_id)
        try:
            return await super().call(  # type: ignore[misc]
                payload, suppress=suppress, unique_id=unique_id,
                skip_schema_validation=skip_schema_validation)
        finally:
            self._awaited_ids.discard(unique_id)
