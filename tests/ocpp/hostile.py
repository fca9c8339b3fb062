"""Helpers for the hostile-frame tests: raw frames over a real TLS WebSocket, and a log scan.

Frames are built by hand and sent with the `websockets` client (no `ocpp` library on the
charger side), so the server sees exactly the bytes a broken or hostile charger sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from certd.ocpp import logsafe
from certd.ocpp.service import OcppService
from tests.ocpp.conftest import basic, open_ws
from tests.pki import MiniCA

PW = "correct-horse-battery-staple"
# One charger per served version (ids as the world fixtures register them).
CHARGER = {"ocpp1.6": "CP16", "ocpp2.0.1": "CP201", "ocpp2.1": "CP21"}
# Loggers whose every record the scan checks: certd's, the ocpp library's, asyncio's
# ("Task exception was never retrieved" would mean a frame escaped into a task).
SCANNED = ("certd", "ocpp", "asyncio")
# A record's message may be at most this long (logsafe's bound plus its cut marker).
LINE_BOUND = logsafe.MAX_LINE + len(logsafe.CUT_MARKER) + 20
TIMEOUT = 10


def raw_ws(service: OcppService, ca: MiniCA, version: str, **kwargs: Any):  # type: ignore[no-untyped-def]
    charger_id = CHARGER[version]
    return open_ws(service, f"/ocpp/{charger_id}", ca, subprotocols=[version],
                   headers=basic(charger_id, PW), **kwargs)


async def answer_to(ws: ClientConnection, frame: str | bytes, *, text: bool | None = None) -> list[Any]:
    """Send one frame as given and return the server's next frame, parsed."""
    await ws.send(frame, text=text)
    async with asyncio.timeout(TIMEOUT):
        reply = json.loads(await ws.recv())
    assert isinstance(reply, list)
    return reply


async def assert_call_error(ws: ClientConnection, frame: str, unique_id: str, code: str) -> list[Any]:
    reply = await answer_to(ws, frame)
    assert reply[:3] == [4, unique_id, code], reply
    assert len(reply) == 5 and isinstance(reply[3], str) and isinstance(reply[4], dict), reply
    assert len(reply[3]) <= 255  # OCPP 2.0.1 errorDescription bound
    return reply


async def assert_still_served(ws: ClientConnection, unique_id: str = "alive") -> None:
    """A valid Heartbeat right after: the connection goes on, and nothing else was queued
    for us (an answer to an ignored frame would arrive here first)."""
    reply = await answer_to(ws, json.dumps([2, unique_id, "Heartbeat", {}]))
    assert reply[0] == 3 and reply[1] == unique_id and reply[2]["currentTime"].endswith("Z"), reply


async def assert_closed_with(ws: ClientConnection, frame: str | bytes, code: int, *,
                             text: bool | None = None) -> None:
    """Send one frame; the server answers nothing and closes with `code`."""
    await ws.send(frame, text=text)
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(TIMEOUT):
            extra = await ws.recv()
            pytest.fail(f"an answer instead of close {code}: {extra!r}")
    assert ws.close_code == code, (ws.close_code, ws.close_reason)


async def wait_for(predicate: Any, what: str) -> None:
    """Poll a condition the server reaches after its read loop ends (counts, offline)."""
    async with asyncio.timeout(TIMEOUT):
        while not predicate():
            await asyncio.sleep(0.01)


def scan_logs(records: list[logging.LogRecord], handler: logging.Handler) -> list[str]:
    """Every scanned record as the log would show it; fails on a control character, a line
    over the bound, or a traceback."""
    lines = []
    for record in records:
        if not record.name.split(".")[0] in SCANNED:
            continue
        message = record.getMessage()
        shown = handler.format(record)
        assert record.exc_info is None, f"a traceback from {record.name}: {shown[:300]!r}"
        bad = [c for c in shown if not c.isprintable()]
        assert not bad, f"raw control characters {bad[:5]!r} in {record.name}: {shown[:300]!r}"
        assert len(message) <= LINE_BOUND, f"{len(message)}-char line from {record.name}"
        assert "connection handler failed" not in message, message
        lines.append(message)
    return lines


@contextlib.contextmanager
def scanned_logs(caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    """Capture every record at DEBUG during the block, then scan them; yields the lines."""
    lines: list[str] = []
    caplog.set_level(logging.DEBUG)
    start = len(caplog.records)
    yield lines
    lines.extend(scan_logs(caplog.records[start:], caplog.handler))
