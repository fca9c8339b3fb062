"""Control characters in every charger-supplied string, over real TLS WebSockets.

Valid frames whose strings carry CR, LF, NUL, ESC, DEL, C1 controls, U+2028/2029, a bidi
override and a lone surrogate: answered as usual, stored escaped (PostgreSQL refuses a NUL
in text, which would fail every later batch of registry writes), and every log record
(certd's and the `ocpp` library's) stays one line of printable characters.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from ocpp.exceptions import GenericError
from ocpp.v16 import call as call16
from sqlmodel import select

from certd.ocpp import auth, charger_registry, logsafe
from certd.store.chargers import Charger, ChargerAuditEvent
from certd.store.db import make_engine, session_scope, upgrade
from tests.ocpp.conftest import HOST, make_config, run, running
from tests.ocpp.hostile import (
    CHARGER, PW, answer_to, assert_call_error, assert_still_served, raw_ws, scan_logs,
    scanned_logs,
)
from tests.pki import store_current

# 13 characters: fits OCPP's shortest string fields (20).
HOSTILE = "\x00\r\n\x1b[2J\u2028\u2029\x85\x7f\u202e\ud800"
BOOT16_FIELDS = {"chargePointVendor": 20, "chargePointModel": 20, "chargePointSerialNumber": 25,
                 "chargeBoxSerialNumber": 25, "firmwareVersion": 50, "iccid": 20, "imsi": 20,
                 "meterType": 25, "meterSerialNumber": 25}


def hostile(limit: int, tag: str) -> str:
    return (tag + HOSTILE)[:limit]


@pytest.fixture
def store(ca, db_url):  # type: ignore[no-untyped-def]
    """SQLite and PostgreSQL: the registry write must survive what a charger sends."""
    upgrade(db_url)
    engine = make_engine(db_url)
    store_current(engine, "rsa", ca.issue([HOST], "rsa"))
    for charger_id in CHARGER.values():
        charger_registry.insert_charger(engine, charger_id, password_hash=auth.hash_password(PW),
                                        heartbeat_class="default")
    yield engine
    engine.dispose()


def _stored(engine, charger_id: str) -> Charger:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return session.get(Charger, charger_id)


@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["json-escaped", "raw-utf8"])
def test_control_characters_in_every_boot_notification_field(ca, ca_file, store, caplog,
                                                             ensure_ascii) -> None:  # type: ignore[no-untyped-def]
    # Raw UTF-8 cannot carry a lone surrogate (the frame would not be UTF-8): drop it there.
    text = HOSTILE if ensure_ascii else HOSTILE.replace("\ud800", "")
    boot16 = {name: (name[:3] + text)[:limit] for name, limit in BOOT16_FIELDS.items()}
    station = {"vendorName": "ven" + text, "model": "mod" + text, "serialNumber": "ser" + text,
               "firmwareVersion": "fw" + text,
               "modem": {"iccid": "icc" + text, "imsi": "ims" + text},
               "customData": {"vendorId": "cus" + text, "free": text}}
    boot201 = {"chargingStation": station, "reason": "PowerUp", "customData": {"vendorId": text}}

    async def main() -> None:
        async with running(make_config(ca_file), store) as service:
            for version, payload in (("ocpp1.6", boot16), ("ocpp2.0.1", boot201)):
                async with raw_ws(service, ca, version) as ws:
                    frame = json.dumps([2, "boot" + text, "BootNotification", payload],
                                       ensure_ascii=ensure_ascii)
                    reply = await answer_to(ws, frame)
                    assert reply[:2] == [3, "boot" + text] and reply[2]["status"] == "Accepted"
                    await assert_still_served(ws)
            await service.shared.writer.flush()  # PostgreSQL would refuse a NUL here

    with scanned_logs(caplog) as lines:
        run(main())
    cp16, cp201 = _stored(store, "CP16"), _stored(store, "CP201")
    stored = [cp16.vendor, cp16.model, cp16.firmware_version, cp16.serial_number,
              cp201.vendor, cp201.model, cp201.firmware_version, cp201.serial_number]
    for value in stored:
        assert value and value.isprintable(), value
    assert cp16.vendor == logsafe.printable(boot16["chargePointVendor"])  # escaped, not dropped
    assert cp201.serial_number.startswith("ser\\x00\\r\\n\\x1b[2J\\u2028")
    booted = [line for line in lines if " booted: " in line]
    assert len(booted) == 2 and all("\\r\\n" in line for line in booted)


def test_control_characters_in_other_messages_ids_and_actions(ca, ca_file, store, caplog) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running(make_config(ca_file), store) as service:
            async with raw_ws(service, ca, "ocpp1.6") as ws:
                status = {"connectorId": 1, "errorCode": "OtherError", "status": "Faulted",
                          "info": hostile(50, "info"), "vendorId": "v" + HOSTILE * 10,
                          "vendorErrorCode": hostile(50, "code")}
                reply = await answer_to(ws, json.dumps([2, "st", "StatusNotification", status]))
                assert reply == [3, "st", {}]
                event = {"type": hostile(50, "type"), "timestamp": hostile(50, "ts"),
                         "techInfo": ("tech" + HOSTILE * 19)[:255]}
                reply = await answer_to(ws, json.dumps([2, "ev", "SecurityEventNotification", event]))
                assert reply == [3, "ev", {}]
                # The message id is echoed exactly (JSON-escaped on the wire).
                reply = await answer_to(ws, json.dumps([2, "id" + HOSTILE, "Heartbeat", {}]))
                assert reply[:2] == [3, "id" + HOSTILE]
                await assert_call_error(ws, json.dumps([2, "act", "Boot" + HOSTILE, {}]), "act",
                                        "NotSupported")
                # Too long for the schema (and full of controls): the schema's answer, one line.
                long_vendor = {"chargePointVendor": HOSTILE * 300, "chargePointModel": "M"}
                await assert_call_error(ws, json.dumps([2, "long", "BootNotification", long_vendor]),
                                        "long", "TypeConstraintViolation")
                # A payload key "self" (Heartbeat's payload is not schema-checked) is no crash.
                reply = await answer_to(ws, json.dumps([2, "self", "Heartbeat",
                                                        {"self": HOSTILE, "callUniqueId": 1}]))
                assert reply[:2] == [3, "self"] and list(reply[2]) == ["currentTime"]
                assert reply[2]["currentTime"].endswith("Z")  # answered by FrameGuard, any payload
                await service.shared.writer.flush()
                assert service.charger("CP16").rejections == {  # type: ignore[union-attr]
                    "unknown_action": 1, "invalid_payload": 1}

    with scanned_logs(caplog) as lines:
        run(main())
    with session_scope(store) as session:
        details = [e.detail for e in session.exec(select(ChargerAuditEvent))
                   if e.kind == "security_event"]
    assert len(details) == 1 and details[0].isprintable() and details[0].startswith("type\\x00")
    assert any("Boot\\x00\\r\\n" in line and "unknown_action" in line for line in lines)
    long_line = [line for line in lines if "message id long" in line and "refused" in line]
    assert len(long_line) == 1 and "\\x00" not in long_line[0]  # the size, not the content


def test_a_charger_error_answer_full_of_controls_reaches_the_caller_not_the_log(
        ca, ca_file, store, caplog) -> None:  # type: ignore[no-untyped-def]
    """The `ocpp` library logs a CALLERROR answer whole (a WARNING with the charger's text):
    logsafe's filter on its logger makes that one bounded line."""
    description = "line one\nFAKE ERROR certd: forged\u2028" + "x" * 5000

    async def main() -> None:
        async with running(make_config(ca_file), store) as service:
            async with raw_ws(service, ca, "ocpp1.6") as ws:
                await assert_still_served(ws)

                async def charger() -> None:
                    request = json.loads(await ws.recv())
                    assert request[0] == 2 and request[2] == "TriggerMessage"
                    await ws.send(json.dumps([4, request[1], "GenericError", description,
                                              {"x": HOSTILE}]))

                answering = asyncio.ensure_future(charger())
                with pytest.raises(GenericError) as raised:
                    await service.call("CP16", call16.TriggerMessage(requested_message="Heartbeat"),
                                       timeout=5)
                await answering
                assert raised.value.description == description  # the caller gets it all
                await assert_still_served(ws)

    with scanned_logs(caplog) as lines:
        run(main())
    library = [line for line in lines if "Received a CALLError" in line]
    assert len(library) == 1 and "FAKE ERROR" in library[0]  # there, escaped, cut
    assert "\\n" in library[0] and len(library[0]) < logsafe.MAX_LINE + 40


def test_the_library_loggers_never_print_a_traceback_or_a_raw_frame(caplog) -> None:  # type: ignore[no-untyped-def]
    """What the `ocpp` library logs on its own (e.g. its handler errors) passes the filter."""
    caplog.set_level(logging.DEBUG)
    frame = '[2,"1","BootNotification",{"chargePointVendor":"' + HOSTILE + "y" * 60_000 + '"}]'
    for name in ("ocpp", "certd.ocpp.protocol"):
        try:
            raise TypeError(f"unhashable: {frame}")
        except TypeError:
            logging.getLogger(name).exception("Error while handling request '%s'", frame)
    records = [r for r in caplog.records if r.name in ("ocpp", "certd.ocpp.protocol")]
    assert len(records) == 2
    lines = scan_logs(records, caplog.handler)
    assert all(line.startswith("Error while handling request") and "(TypeError: unhashable" in line
               for line in lines)
