"""Malformed and hostile frames over real TLS WebSockets against a running listener.

Each frame is built by hand and checked for the exact OCPP answer (CALLERROR code) or
close code, for the connection state after it (a valid Heartbeat still works where the
connection goes on; a new connection works after a close), for the per-reason counters on
the session and the listener, and every log record of the test (certd's, the `ocpp`
library's, asyncio's) must be one line of printable characters within the bound.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from certd.ocpp import auth, charger_registry
from tests.ocpp.conftest import HOST, make_config, run, running
from tests.ocpp.hostile import (
    CHARGER, PW, assert_call_error, assert_closed_with, assert_still_served, answer_to, raw_ws,
    scanned_logs, wait_for,
)
from tests.pki import store_current

HUGE = "9" * 5000  # thousands of digits: int() would refuse it, json recursion is not involved
DEEP = "[" * 5000 + "]" * 5000  # thousands deep: json.loads would raise RecursionError
DEEP_OBJECT = '{"a":' * 3000 + "1" + "}" * 3000
VERSIONS = ["ocpp1.6", "ocpp2.0.1"]
FORMAT = {"ocpp1.6": "FormationViolation", "ocpp2.0.1": "FormatViolation"}
ENVELOPE = {"ocpp1.6": "FormationViolation", "ocpp2.0.1": "RpcFrameworkError"}
MESSAGE_TYPE = {"ocpp1.6": "ProtocolError", "ocpp2.0.1": "MessageTypeNotSupported"}
UNHANDLED_ACTION = {"ocpp1.6": "DataTransfer", "ocpp2.0.1": "Authorize"}  # in the spec, no handler
BOOT_OK = {"ocpp1.6": {"chargePointVendor": "V", "chargePointModel": "M"},
           "ocpp2.0.1": {"chargingStation": {"vendorName": "V", "model": "M"}, "reason": "PowerUp"}}


@pytest.fixture
def world(ca, engine):  # type: ignore[no-untyped-def]
    store_current(engine, "rsa", ca.issue([HOST], "rsa"))
    for charger_id in CHARGER.values():
        charger_registry.insert_charger(engine, charger_id, password_hash=auth.hash_password(PW),
                                        heartbeat_class="default")
    return engine


def answered_cases(version: str) -> list[tuple[str, str, str, str]]:
    """(frame, message id, CALLERROR code, counter reason): the connection goes on after each."""
    cases = [
        ('[2,"a-str","NoSuchAction",{}]', "a-str", "NotSupported", "unknown_action"),
        (f'[2,"a-known","{UNHANDLED_ACTION[version]}",{{}}]', "a-known", "NotImplemented",
         "not_implemented"),
    ]
    # The action as every other JSON type.
    for i, action in enumerate(["42", "-1.5e3", "true", "false", "null", '["BootNotification"]',
                                '{"action":"Heartbeat"}', "[]", "{}"]):
        cases.append((f'[2,"a-{i}",{action},{{}}]', f"a-{i}", ENVELOPE[version], "bad_action"))
    cases += [
        (f'[2,"n-int","Heartbeat",{{"x":{HUGE}}}]', "n-int", "TypeConstraintViolation",
         "number_too_long"),
        (f'[2,"n-neg","BootNotification",{{"x":[-{HUGE}]}}]', "n-neg", "TypeConstraintViolation",
         "number_too_long"),
        (f'[2,"n-float","Heartbeat",{{"x":1.{HUGE}e5}}]', "n-float", "TypeConstraintViolation",
         "number_too_long"),
        (f'[2,"d-array","Heartbeat",{{"x":{DEEP}}}]', "d-array", FORMAT[version], "too_deep"),
        (f'[2,"d-object","Heartbeat",{DEEP_OBJECT}]', "d-object", FORMAT[version], "too_deep"),
        ('[2,"j-open","Heartbeat",{', "j-open", FORMAT[version], "invalid_json"),
        ('[2,"j-cut"', "j-cut", FORMAT[version], "invalid_json"),  # the id is readable: answered
        ('[2,"j-nan","Heartbeat",{"x":NaN}]', "j-nan", FORMAT[version], "invalid_json"),
        ('[2,"j-raw","Heartbeat",{"x":"a\nb"}]', "j-raw", FORMAT[version], "invalid_json"),
        ('[2,"l-2"]', "l-2", ENVELOPE[version], "bad_length"),
        ('[2,"l-3","Heartbeat"]', "l-3", ENVELOPE[version], "bad_length"),
        ('[2,"l-5","Heartbeat",{},{}]', "l-5", ENVELOPE[version], "bad_length"),
        ('[2,"p-list","Heartbeat",[]]', "p-list", "TypeConstraintViolation", "bad_payload"),
        ('[2,"p-null","Heartbeat",null]', "p-null", "TypeConstraintViolation", "bad_payload"),
        ('[2,"p-str","Heartbeat","{}"]', "p-str", "TypeConstraintViolation", "bad_payload"),
        ('[9,"m-9",{}]', "m-9", MESSAGE_TYPE[version], "unknown_message_type"),
        ('[0,"m-0","Heartbeat",{}]', "m-0", MESSAGE_TYPE[version], "unknown_message_type"),
        ('[-2,"m-neg","Heartbeat",{}]', "m-neg", MESSAGE_TYPE[version], "unknown_message_type"),
    ]
    # The library's schema check, answered in the version's spelling, logged as one line.
    boot = BOOT_OK[version]
    missing = {k: v for k, v in boot.items() if k not in ("chargePointModel", "reason")}
    wrong_type = {**boot, **({"chargePointVendor": 5} if version == "ocpp1.6" else {"reason": 5})}
    cases += [
        (json.dumps([2, "s-missing", "BootNotification", missing]), "s-missing", "ProtocolError",
         "invalid_payload"),
        (json.dumps([2, "s-type", "BootNotification", wrong_type]), "s-type",
         "TypeConstraintViolation", "invalid_payload"),
        (json.dumps([2, "s-extra", "BootNotification", {**boot, "zz": 1}]), "s-extra",
         FORMAT[version], "invalid_payload"),
    ]
    return cases


@pytest.mark.parametrize("version", VERSIONS)
def test_malformed_calls_get_the_ocpp_answer_and_the_connection_goes_on(
        ca, ca_file, world, caplog, version) -> None:  # type: ignore[no-untyped-def]
    cases = answered_cases(version)
    charger_id = CHARGER[version]

    async def main() -> None:
        async with running(make_config(ca_file), world) as service:
            async with raw_ws(service, ca, version) as ws:
                for frame, unique_id, code, _ in cases:
                    await assert_call_error(ws, frame, unique_id, code)
                    await assert_still_served(ws, f"after-{unique_id}")
                expected = Counter(reason for *_, reason in cases)
                session = service.charger(charger_id)
                assert session is not None and session.rejections == expected
                assert service.listener("main").rejections == expected
                # The counters and the log say what happened; the frames still work as frames.
                assert (await answer_to(ws, json.dumps([2, "boot", "BootNotification",
                                                        BOOT_OK[version]])))[2]["status"] == "Accepted"

    with scanned_logs(caplog) as lines:
        run(main())
    refused = [line for line in lines if line.startswith(f"charger {charger_id}: refused a ")]
    # One line per refused frame, with the frame's size and never its content.
    assert len(refused) == len(cases)
    for (frame, unique_id, code, reason), line in zip(cases, refused):
        assert f"-byte frame ({reason}: " in line and f"CALLERROR {code}" in line, line
        assert f"a {len(frame.encode())}-byte frame" in line, line
    assert not [line for line in lines if "99999999" in line or "[[[[" in line or '{"a":' in line]


@pytest.mark.parametrize("version", VERSIONS)
def test_answers_to_no_call_and_broken_answers_are_ignored(ca, ca_file, world, caplog,
                                                           version) -> None:  # type: ignore[no-untyped-def]
    frames = [
        ('[3,"nobody",{}]', "unknown_response_id"),
        ('[4,"nobody","GenericError","no call had this id",{}]', "unknown_response_id"),
        ('[4,"nobody","GenericError","details left out"]', "unknown_response_id"),
        ('[3,"x"]', "bad_response"),
        ('[3,"x",[]]', "bad_response"),
        ('[4,"x",5,"description",{}]', "bad_response"),
        ('[4,"x","GenericError","d",{},{}]', "bad_response"),
        (f'[3,"x",{{"a":{DEEP}}}]', "too_deep"),
        (f'[3,"x",{{"a":{HUGE}}}]', "number_too_long"),
        ('[4,"x","GenericError",', "invalid_json"),
    ]

    async def main() -> None:
        async with running(make_config(ca_file), world) as service:
            async with raw_ws(service, ca, version) as ws:
                for i, (frame, _) in enumerate(frames):
                    await ws.send(frame)
                    await assert_still_served(ws, f"after-{i}")  # nothing answered the frame
                expected = Counter(reason for _, reason in frames)
                assert service.charger(CHARGER[version]).rejections == expected  # type: ignore[union-attr]

    with scanned_logs(caplog) as lines:
        run(main())
    assert sum("; ignored" in line for line in lines) == len(frames)


CLOSES = [
    # (frame, text frame?, close code, reason): no message id can be read.
    (f'[2,{HUGE},"Heartbeat",{{}}]', None, 1008, "number_too_long"),
    (DEEP, None, 1008, "too_deep"),
    (DEEP_OBJECT, None, 1008, "too_deep"),
    ("not json at all", None, 1007, "invalid_json"),
    ("", None, 1007, "invalid_json"),
    ("[2,", None, 1007, "invalid_json"),  # cut before the message id
    (b"\xff\xfe[2,\"id\"]", None, 1007, "not_utf8"),  # a binary frame that is not UTF-8
    (b"[2,\"\xc3\x28\",\"Heartbeat\",{}]", True, 1007, "not_utf8"),  # a text frame: websockets
    ('{"messageTypeId":2,"uniqueId":"id"}', None, 1002, "not_an_array"),
    ("[]", None, 1002, "not_an_array"),
    ('"[2,\\"id\\",\\"Heartbeat\\",{}]"', None, 1002, "not_an_array"),
    ("42", None, 1002, "not_an_array"),
    ("null", None, 1002, "not_an_array"),
    ('["2","id","Heartbeat",{}]', None, 1002, "bad_message_type"),
    ('[2.0,"id","Heartbeat",{}]', None, 1002, "bad_message_type"),
    ('[true,"id","Heartbeat",{}]', None, 1002, "bad_message_type"),
    ('[null,"id"]', None, 1002, "bad_message_type"),
    ('[[2],"id","Heartbeat",{}]', None, 1002, "bad_message_type"),
    ("[2]", None, 1002, "bad_unique_id"),
    ('[2,17,"Heartbeat",{}]', None, 1002, "bad_unique_id"),
    ('[2,null,"Heartbeat",{}]', None, 1002, "bad_unique_id"),
    ('[2,["id"],"Heartbeat",{}]', None, 1002, "bad_unique_id"),
    ('[3,{"id":1},{}]', None, 1002, "bad_unique_id"),
    ('[2,"big","Heartbeat",{"x":"' + "a" * 70_000 + '"}]', None, 1009, "too_big"),
]


@pytest.mark.parametrize("version", VERSIONS)
def test_frames_without_a_readable_message_id_close_the_connection(
        ca, ca_file, world, caplog, version) -> None:  # type: ignore[no-untyped-def]
    charger_id = CHARGER[version]

    async def main() -> None:
        async with running(make_config(ca_file), world) as service:
            listener = service.listener("main")
            for n, (frame, text, code, reason) in enumerate(CLOSES, start=1):
                async with raw_ws(service, ca, version) as ws:
                    await assert_still_served(ws, "before")
                    await assert_closed_with(ws, frame, code, text=text)
                # Counted once the server's read loop has seen the close; the charger is offline.
                await wait_for(lambda: sum(listener.rejections.values()) == n, f"count {reason}")
                await wait_for(lambda: service.charger(charger_id) is None, "offline")
                assert listener.rejections[reason] == sum(1 for c in CLOSES[:n] if c[3] == reason)
            async with raw_ws(service, ca, version) as ws:  # the listener serves on
                await assert_still_served(ws)

    with scanned_logs(caplog) as lines:
        run(main())
    closing = [line for line in lines if line.startswith(f"charger {charger_id}: refused ")]
    assert len(closing) == len(CLOSES)  # one line each, in order
    for (_, _, code, reason), line in zip(CLOSES, closing):
        assert f"({reason}: " in line, line
        assert line.endswith((f"; closing with {code}", f"; closed with {code} by websockets")), line


def test_a_binary_frame_of_valid_utf8_json_is_served(ca, ca_file, world) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running(make_config(ca_file), world) as service:
            async with raw_ws(service, ca, "ocpp1.6") as ws:
                reply = await answer_to(ws, b'[2,"bin","Heartbeat",{}]')
                assert reply[:2] == [3, "bin"]
                await assert_still_served(ws)
    run(main())


def test_ocpp21_send_and_callresulterror_are_not_answered(ca, ca_file, world, caplog) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running(make_config(ca_file), world) as service:
            async with raw_ws(service, ca, "ocpp2.1") as ws:
                await ws.send('[6,"s1","NotifyPeriodicEventStream",{"id":1,"pending":0,"basetime":"x","data":[]}]')
                await ws.send('[5,"r1","InternalError","",{}]')
                await assert_still_served(ws)
                # And 2.1 answers an action it does not know (the library answered nothing).
                await assert_call_error(ws, '[2,"u1","NoSuchAction",{}]', "u1", "NotSupported")
                await assert_call_error(ws, '[2,"u2",["x"],{}]', "u2", "RpcFrameworkError")
                assert service.charger("CP21").rejections == Counter(  # type: ignore[union-attr]
                    ignored_message_type=2, unknown_action=1, bad_action=1)

    with scanned_logs(caplog):
        run(main())
