"""The pure parts: frames.parse (bytes/str -> frame or rejection) and logsafe (escaping, filter)."""

from __future__ import annotations

import logging
import sys
import time

import pytest

from certd.ocpp import frames, logsafe
from certd.ocpp.frames import Frame, Limits, Rejection

LIMITS = Limits(max_chars=64 * 1024)


def test_a_valid_frame_of_each_type() -> None:
    assert frames.parse('[2,"1","Heartbeat",{}]', LIMITS, "ocpp1.6") == Frame(2, "1", ("Heartbeat", {}))
    assert frames.parse(b' [3 ,"1", {"a":[1.5]}] ', LIMITS, "ocpp1.6") == Frame(3, "1", ({"a": [1.5]},))
    assert frames.parse('[4,"1","GenericError","d",{}]', LIMITS, "ocpp2.0.1") == Frame(
        4, "1", ("GenericError", "d", {}))


@pytest.mark.parametrize("text", [
    "[" * 100_000,                       # never closed
    "[" * 30_000 + "]" * 30_000,
    '{"a":' * 10_000,
    '"' + "\\" * 60_000,                 # an unterminated string of escapes
    '["' * 20_000,
    '[2,"id","A",' + '{"k":[' * 8_000,
])
def test_pathological_nesting_is_refused_quickly_without_recursion(text: str) -> None:
    limit = sys.getrecursionlimit()
    started = time.perf_counter()
    result = frames.parse(text, Limits(max_chars=200_000), "ocpp1.6")
    assert time.perf_counter() - started < 1.0
    assert isinstance(result, Rejection) and result.reason in ("too_deep", "invalid_json")
    assert sys.getrecursionlimit() == limit


def test_nesting_up_to_the_bound_is_parsed_and_one_more_is_refused() -> None:
    # The outer array is depth 1, the payload object 2: 30 more levels fit within 32.
    inner = "[" * 30 + "]" * 30
    assert isinstance(frames.parse(f'[2,"1","A",{{"x":{inner}}}]', LIMITS, "ocpp1.6"), Frame)
    deeper = "[" * 31 + "]" * 31
    refused = frames.parse(f'[2,"1","A",{{"x":{deeper}}}]', LIMITS, "ocpp1.6")
    assert refused == Rejection("too_deep", "nested deeper than 32", "1", "FormationViolation")
    # Brackets inside strings are text, not nesting.
    assert isinstance(frames.parse('[2,"1","A",{"x":"' + "[" * 100 + '"}]', LIMITS, "ocpp1.6"), Frame)


def test_numbers_are_bounded_by_length_without_touching_the_process_limit() -> None:
    digits = sys.get_int_max_str_digits()
    ok = frames.parse('[2,"1","A",{"x":' + "9" * 40 + "}]", LIMITS, "ocpp1.6")
    assert isinstance(ok, Frame) and ok.fields[1]["x"] == int("9" * 40)
    for number in ("9" * 41, "-" + "9" * 5000, "1." + "5" * 5000, "1e" + "9" * 100):
        refused = frames.parse('[2,"1","A",{"x":' + number + "}]", LIMITS, "ocpp1.6")
        assert isinstance(refused, Rejection) and refused.reason == "number_too_long"
        assert refused.error_code == "TypeConstraintViolation" and refused.unique_id == "1"
    assert sys.get_int_max_str_digits() == digits


def test_the_message_id_is_read_from_the_front_of_an_unparseable_frame() -> None:
    assert frames.read_head(' [ 2 , "abc" ,{{{', LIMITS) == (2, "abc")
    assert frames.read_head('[2,"a\\"b"', LIMITS) == (2, 'a"b')
    for text in ('["2","abc"', "[[2],\"abc\"", '[2,abc', '{"a":1}', "[" + "9" * 50 + ',"x"', "[2"):
        assert frames.read_head(text, LIMITS) is None, text


@pytest.mark.parametrize("version,codes", [
    ("ocpp1.6", ("FormationViolation", "FormationViolation", "ProtocolError")),
    ("ocpp2.0.1", ("FormatViolation", "RpcFrameworkError", "MessageTypeNotSupported")),
    ("ocpp2.1", ("FormatViolation", "RpcFrameworkError", "MessageTypeNotSupported")),
])
def test_codes_are_spelled_as_the_version_spells_them(version: str, codes: tuple[str, ...]) -> None:
    fmt, envelope, message_type = codes
    assert frames.parse('[2,"1","A",{', LIMITS, version).error_code == fmt  # type: ignore[union-attr]
    assert frames.parse('[2,"1",7,{}]', LIMITS, version).error_code == envelope  # type: ignore[union-attr]
    assert frames.parse('[8,"1"]', LIMITS, version).error_code == message_type  # type: ignore[union-attr]
    assert frames.error_code_for(version, "FormatViolation") == fmt
    assert frames.error_code_for(version, "TypeConstraintViolation") == "TypeConstraintViolation"


def test_oversized_and_non_utf8_frames() -> None:
    small = Limits(max_chars=1024)
    assert frames.parse("[" + " " * 1024 + "]", small, "ocpp1.6").close_code == 1009  # type: ignore[union-attr]
    assert frames.parse(b"x" * 1025, small, "ocpp1.6").close_code == 1009  # type: ignore[union-attr]
    refused = frames.parse(b'[2,"\xff","A",{}]', small, "ocpp1.6")
    assert refused == Rejection("not_utf8", "not UTF-8", close_code=1007)


def test_escape_writes_every_unprintable_character_as_an_escape() -> None:
    text = "a\x00\r\n\t\x1b\x7f\x85\u2028\u2029\u202e\ud800\U000e0001\\b é€"
    escaped = logsafe.escape(text)
    assert escaped == ("a\\x00\\r\\n\\t\\x1b\\x7f\\x85\\u2028\\u2029\\u202e\\ud800\\U000e0001"
                       "\\\\b é€")
    assert escaped.isprintable()
    assert logsafe.escape("plain text é") == "plain text é"
    assert logsafe.escape("a\\b\n", backslash=False) == "a\\b\\n"


def test_printable_cuts_long_values_with_a_marker_of_their_length() -> None:
    assert logsafe.printable("x" * 300) == "x" * 200 + "...[cut, 300 chars in all]"
    assert logsafe.printable("\n" * 150) == "\\n" * 100 + "...[cut, 150 chars in all]"
    assert logsafe.printable(None) == ""


def test_the_filter_on_certd_loggers_keeps_tracebacks_and_bounds_the_line(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger="certd.ocpp")
    try:
        raise RuntimeError("a certd bug")
    except RuntimeError:
        logging.getLogger("certd.ocpp").exception("hook failed for %s", "x\ny" * 1000)
    record = caplog.records[-1]
    assert record.exc_info is not None  # certd's own bugs keep their traceback
    message = record.getMessage()
    assert message.startswith("hook failed for x\\ny") and message.isprintable()
    assert len(message) <= logsafe.MAX_LINE + len(logsafe.CUT_MARKER) + 10


def test_install_adds_each_filter_once() -> None:
    logsafe.install()
    logsafe.install()
    for name in logsafe.LIBRARY_LOGGERS + logsafe.CERTD_LOGGERS:
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, logsafe.SafeLogFilter) for f in filters) == 1, name
