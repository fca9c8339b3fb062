"""certd.runtime.eventloop: the loop choice, and what the OCPP endpoint needs from the loop, on both loops.

The rest of tests/ocpp runs on the loop `certd serve` uses (uvloop when installed;
CERTD_EVENT_LOOP=asyncio for asyncio). Here each loop-sensitive behaviour runs on
both: the sni_callback context swap (new handshakes see a renewal, an established
socket keeps heartbeating), and handshake_timeout closing a charger that stalls in
the TLS handshake or before its WebSocket upgrade request.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from ocpp.v16 import call

from certd.runtime import eventloop
from certd.errors import CertdError
from certd.sandbox.certd_config import ocpp_listener
from tests.ocpp.conftest import (
    HOST, PASSWORD, basic, boot16, charge_point, client_context, make_config, open_ws, peer_serial, run, running,
)
from tests.pki import store_current

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    eventloop.choose("auto")[0] != "uvloop", reason="uvloop is not installed"))]


def test_choice_follows_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(eventloop.ENV_VAR, "asyncio")
    assert eventloop.choose() == ("asyncio", None)
    monkeypatch.setenv(eventloop.ENV_VAR, "  UVLOOP ")
    if eventloop.choose("auto")[0] == "uvloop":
        assert eventloop.name() == "uvloop"
    monkeypatch.setenv(eventloop.ENV_VAR, "trio")
    with pytest.raises(CertdError, match="CERTD_EVENT_LOOP='trio': expected one of auto, uvloop, asyncio"):
        eventloop.choose()


def test_without_uvloop_auto_falls_back_and_uvloop_is_an_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    assert eventloop.choose("auto") == ("asyncio", None)
    with pytest.raises(CertdError, match="uvloop is not installed"):
        eventloop.choose("uvloop")
    monkeypatch.setenv(eventloop.ENV_VAR, "uvloop")

    async def never_started() -> None:
        raise AssertionError("must not run")

    with pytest.raises(CertdError, match="uvloop is not installed"):
        eventloop.run(never_started())


@pytest.mark.parametrize("loop_name", LOOPS)
def test_live_swap_on_each_loop(ca, ca_file, store, monkeypatch, loop_name) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(eventloop.ENV_VAR, loop_name)
    old_leaf = ca.issue([HOST], "rsa")
    store_current(store, "rsa", old_leaf)
    listeners = [ocpp_listener("main", HOST, certificates=["rsa"], tls_profile="gsm")]

    async def main() -> None:
        assert type(asyncio.get_running_loop()).__module__.split(".")[0] == loop_name
        async with running(make_config(ca_file, listeners=listeners), store) as service:
            async with open_ws(service, "/ocpp/CP1", ca, headers=basic("CP1", PASSWORD)) as old_ws:
                async with charge_point(old_ws, "ocpp1.6", "CP1") as old_cp:
                    assert (await old_cp.call(boot16())).interval == 60
                    new_leaf = ca.issue([HOST], "rsa")
                    store_current(store, "rsa", new_leaf)
                    assert [r.status for r in await service.reload("rsa")] == ["swapped"]
                    async with open_ws(service, "/ocpp/CP2", ca, headers=basic("CP2", PASSWORD)) as new_ws:
                        assert peer_serial(new_ws) == new_leaf.serial
                    assert peer_serial(old_ws) == old_leaf.serial
                    await old_cp.call(call.Heartbeat())  # same socket, still answered

    run(main())


@pytest.mark.parametrize("loop_name", LOOPS)
def test_handshake_timeout_closes_stalled_chargers(ca, ca_file, store, monkeypatch, loop_name) -> None:  # type: ignore[no-untyped-def]
    """A charger silent after connecting (no ClientHello), or after TLS (no upgrade request), is
    closed after handshake_timeout (websockets passes it to the loop as ssl_handshake_timeout)."""
    monkeypatch.setenv(eventloop.ENV_VAR, loop_name)
    store_current(store, "rsa", ca.issue([HOST], "rsa"))

    async def closed_by_server(reader: asyncio.StreamReader) -> bool:
        try:
            async with asyncio.timeout(20):  # far below 60 s, far above handshake_timeout
                return await reader.read() == b""
        except (ConnectionResetError, OSError):
            return True

    async def main() -> None:
        config = make_config(ca_file, handshake_timeout=0.5)
        async with running(config, store) as service:
            port = service.listener("main").ports[0]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)  # TCP, no ClientHello
            assert await closed_by_server(reader)
            writer.close()
            reader, writer = await asyncio.open_connection(  # TLS completes, no HTTP request follows
                "127.0.0.1", port, ssl=client_context(ca), server_hostname=HOST)
            assert await closed_by_server(reader)
            writer.close()
            async with open_ws(service, "/ocpp/CP1", ca, headers=basic("CP1", PASSWORD)) as ws:
                async with charge_point(ws, "ocpp1.6", "CP1") as cp:
                    assert (await cp.call(boot16())).status == "Accepted"

    run(main())
