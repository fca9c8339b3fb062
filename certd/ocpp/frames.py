"""Pre-parser for OCPP-J frames: a charger's bytes -> a checked frame or a rejection.

Pure (no I/O, no logging). Runs before any library sees a frame, so a hostile frame
cannot reach the `ocpp` library's unhandled paths: nesting is bounded by a bracket
scan BEFORE `json` recurses (no RecursionError), every number by its length through
the decoder's parse hooks (no process-wide `sys.set_int_max_str_digits`, no ValueError
from int()), and the array shape is checked (no TypeError from a list as the action).

What a rejected frame gets (OCPP-J 1.6 section 4.2.3, OCPP 2.0.1 Part 4 section 4.2.3):

    reason                 CALL with a readable        no readable CALL id
                           message id: CALLERROR       (connection closed)
    not_utf8               -                           1007
    too_big                -                           1009
    invalid_json           Formation-/FormatViolation  1007
    too_deep               Formation-/FormatViolation  1008
    number_too_long        TypeConstraintViolation     1008
    not_an_array           -                           1002
    bad_message_type       -                           1002
    bad_unique_id          -                           1002
    bad_length, bad_action FormationViolation / RpcFrameworkError
    bad_payload            TypeConstraintViolation
    unknown_message_type   ProtocolError / MessageTypeNotSupported
    bad_response           - (a broken CALLRESULT/CALLERROR is ignored: never answered)
    ignored_message_type   - (OCPP 2.1 SEND and CALLRESULTERROR: never answered)

(x / y: OCPP 1.6 / OCPP 2.x spelling.) A CALLERROR leaves the connection open; a
valid frame afterwards is served as usual.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

CALL, CALLRESULT, CALLERROR = 2, 3, 4
# OCPP 2.1 adds CALLRESULTERROR (an error about our CALLRESULT) and SEND (unconfirmed).
CALLRESULTERROR_21, SEND_21 = 5, 6

# The outer array is depth 1; OCPP payloads nest about 8 deep, the recursion limit is 1000.
MAX_DEPTH = 32
# OCPP integers are 32-bit and decimals short; 40 characters leaves room for any real one.
MAX_NUMBER_CHARS = 40

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009


class Answer(Enum):
    """Which CALLERROR a rejected CALL gets; the code's spelling depends on the version."""

    FORMAT = "format"  # payload not parseable or not shaped like a payload
    ENVELOPE = "envelope"  # the [2, id, action, payload] array itself is wrong
    TYPE = "type"  # a value of the wrong JSON type or out of its bounds
    MESSAGE_TYPE = "message_type"  # a MessageTypeId this version does not know

    def code(self, version: str) -> str:
        v16 = version == "ocpp1.6"
        return {
            Answer.FORMAT: "FormationViolation" if v16 else "FormatViolation",
            Answer.ENVELOPE: "FormationViolation" if v16 else "RpcFrameworkError",
            Answer.TYPE: "TypeConstraintViolation",
            Answer.MESSAGE_TYPE: "ProtocolError" if v16 else "MessageTypeNotSupported",
        }[self]


# OCPP 1.6J spells two codes differently (its errata keeps them); the library raises 2.x names.
_V16_SPELLING = {"FormatViolation": "FormationViolation",
                 "OccurrenceConstraintViolation": "OccurenceConstraintViolation"}


def error_code_for(version: str, code: str) -> str:
    """A CALLERROR code (as the `ocpp` library names it) in the served version's spelling."""
    return _V16_SPELLING.get(code, code) if version == "ocpp1.6" else code


@dataclass(frozen=True)
class Limits:
    max_chars: int
    max_depth: int = MAX_DEPTH
    max_number_chars: int = MAX_NUMBER_CHARS


@dataclass(frozen=True)
class Frame:
    """A well-formed frame. `fields` are the elements after the message id:
    CALL (action, payload), CALLRESULT (payload,), CALLERROR (code, description, details)."""

    message_type_id: int
    unique_id: str
    fields: tuple[Any, ...]

    @property
    def action(self) -> str | None:
        return self.fields[0] if self.message_type_id == CALL else None


@dataclass(frozen=True)
class Rejection:
    """A frame refused. `detail` is certd's own wording, never the frame's content.

    Set `error_code` (with `unique_id`): answer with that CALLERROR and go on.
    Set `close_code`: close the connection. Neither: ignore the frame.
    """

    reason: str
    detail: str
    unique_id: str | None = None
    error_code: str | None = None
    close_code: int | None = None


class _NumberTooLong(Exception):
    pass


# A JSON string (escapes included) or one bracket: brackets inside strings do not count.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def too_deep(text: str, max_depth: int) -> bool:
    """True when arrays/objects nest deeper than `max_depth`; linear, no recursion."""
    if text.count("[") + text.count("{") <= max_depth:  # the usual frame: no scan at all
        return False
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif token in "]}":
            depth -= 1
    return False


@functools.lru_cache(maxsize=16)
def _decoder(limits: Limits) -> json.JSONDecoder:
    """json's C decoder with bounded numbers; one per Limits (they are few and frozen)."""
    max_chars = limits.max_number_chars

    def parse_int(token: str) -> int:
        if len(token) > max_chars:
            raise _NumberTooLong
        return int(token)

    def parse_float(token: str) -> float:
        if len(token) > max_chars:
            raise _NumberTooLong
        return float(token)

    def parse_constant(token: str) -> Any:  # NaN, Infinity, -Infinity are not JSON
        raise ValueError(f"{token} is not JSON")

    return json.JSONDecoder(parse_int=parse_int, parse_float=parse_float,
                            parse_constant=parse_constant)


def _skip_whitespace(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


def read_head(text: str, limits: Limits) -> tuple[int, str] | None:
    """MessageTypeId and message id of a frame whose whole cannot be parsed, read as two
    scalars from the front (never recursing); None when they cannot be read."""
    decoder = _decoder(limits)
    index = _skip_whitespace(text, 0)
    if text[index:index + 1] != "[":
        return None
    index = _skip_whitespace(text, index + 1)
    if text[index:index + 1] not in ("-", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"):
        return None
    try:
        message_type_id, index = decoder.raw_decode(text, index)
        index = _skip_whitespace(text, index)
        if text[index:index + 1] != ",":
            return None
        index = _skip_whitespace(text, index + 1)
        if text[index:index + 1] != '"':
            return None
        unique_id, _ = decoder.raw_decode(text, index)
    except (ValueError, _NumberTooLong):
        return None
    if type(message_type_id) is not int or not isinstance(unique_id, str):
        return None
    return message_type_id, unique_id


def _unparseable(text: str, limits: Limits, version: str, reason: str, detail: str,
                 answer: Answer, close_code: int) -> Rejection:
    head = read_head(text, limits)
    if head is None:
        return Rejection(reason, detail, close_code=close_code)
    message_type_id, unique_id = head
    if message_type_id == CALL:
        return Rejection(reason, detail, unique_id, answer.code(version))
    if message_type_id in (CALLRESULT, CALLERROR):
        return Rejection(reason, detail, unique_id)  # a broken answer: ignored, never answered
    return Rejection(reason, detail, close_code=close_code)


def parse(raw: str | bytes, limits: Limits, version: str) -> Frame | Rejection:
    """A frame as websockets delivers it (text: str; binary: bytes, taken if UTF-8)."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        if len(raw) > limits.max_chars:
            return Rejection("too_big", f"over {limits.max_chars} bytes",
                             close_code=CLOSE_TOO_BIG)
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("not_utf8", "not UTF-8", close_code=CLOSE_INVALID_DATA)
    else:
        text = raw
    if len(text) > limits.max_chars:
        return Rejection("too_big", f"over {limits.max_chars} characters",
                         close_code=CLOSE_TOO_BIG)
    if too_deep(text, limits.max_depth):
        return _unparseable(text, limits, version, "too_deep",
                            f"nested deeper than {limits.max_depth}", Answer.FORMAT,
                            CLOSE_POLICY_VIOLATION)
    try:
        value = _decoder(limits).decode(text)
    except _NumberTooLong:
        return _unparseable(text, limits, version, "number_too_long",
                            f"a number longer than {limits.max_number_chars} characters",
                            Answer.TYPE, CLOSE_POLICY_VIOLATION)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return _unparseable(text, limits, version, "invalid_json", "not valid JSON",
                            Answer.FORMAT, CLOSE_INVALID_DATA)
    return check_shape(value, version)


def check_shape(value: Any, version: str) -> Frame | Rejection:
    """The parsed JSON as one of the OCPP-J message arrays."""
    if not isinstance(value, list) or not value:
        return Rejection("not_an_array", "not a non-empty JSON array",
                         close_code=CLOSE_PROTOCOL_ERROR)
    message_type_id = value[0]
    if type(message_type_id) is not int:  # bool, float, string, ...: nothing to trust
        return Rejection("bad_message_type", "the MessageTypeId is not an integer",
                         close_code=CLOSE_PROTOCOL_ERROR)
    unique_id = value[1] if len(value) > 1 else None
    if not isinstance(unique_id, str):
        return Rejection("bad_unique_id", "the message id is missing or not a string",
                         close_code=CLOSE_PROTOCOL_ERROR)
    if message_type_id == CALL:
        return _check_call(value, unique_id, version)
    if message_type_id == CALLRESULT:
        if len(value) != 3 or not isinstance(value[2], dict):
            return Rejection("bad_response", "a CALLRESULT that is not [3, id, {payload}]",
                             unique_id)
        return Frame(CALLRESULT, unique_id, (value[2],))
    if message_type_id == CALLERROR:
        details = value[4] if len(value) == 5 else {}
        if (len(value) not in (4, 5) or not isinstance(value[2], str)
                or not isinstance(value[3], str) or not isinstance(details, dict)):
            return Rejection("bad_response",
                             "a CALLERROR that is not [4, id, code, description, {details}]",
                             unique_id)
        return Frame(CALLERROR, unique_id, (value[2], value[3], details))
    if version == "ocpp2.1" and message_type_id in (CALLRESULTERROR_21, SEND_21):
        return Rejection("ignored_message_type", f"MessageTypeId {message_type_id} is not handled",
                         unique_id)
    return Rejection("unknown_message_type", f"unknown MessageTypeId {message_type_id}",
                     unique_id, Answer.MESSAGE_TYPE.code(version))


def _check_call(value: list[Any], unique_id: str, version: str) -> Frame | Rejection:
    if len(value) != 4:
        return Rejection("bad_length", f"a CALL of {len(value)} elements instead of 4",
                         unique_id, Answer.ENVELOPE.code(version))
    action, payload = value[2], value[3]
    if not isinstance(action, str):
        return Rejection("bad_action", f"the action is a JSON {json_type(action)}, not a string",
                         unique_id, Answer.ENVELOPE.code(version))
    if not isinstance(payload, dict):
        return Rejection("bad_payload", f"the payload is a JSON {json_type(payload)}, not an object",
                         unique_id, Answer.TYPE.code(version))
    return Frame(CALL, unique_id, (action, payload))


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")
