"""What real chargers send and do: approval while connected, customData, hostile strings, vanishing mid-call."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from ocpp.v16 import call as c16
from certd.ocpp import charger_registry
from certd.rollover.provision import Provisioner
from tests.ocpp.conftest import PASSWORD as PW
from tests.ocpp.conftest import HOST, basic, boot16, boot201, charge_point, make_config, open_ws, register, run, running
from tests.pki import store_current


@pytest.fixture
def world(ca, engine):  # type: ignore[no-untyped-def]
    store_current(engine, "rsa", ca.issue([HOST], "rsa"))
    register(engine, "CP1", registration="pending")
    register(engine, "CP2")
    return engine


def test_a_charger_approved_while_connected_is_accepted_at_its_next_boot(ca, ca_file, world):
    async def main():
        async with running(make_config(ca_file), world) as service:
            async with open_ws(service, "/ocpp/CP1", ca, headers=basic("CP1", PW)) as ws:
                async with charge_point(ws, "ocpp1.6", "CP1") as cp:
                    r = await cp.call(boot16()); assert r.status == "Pending"
                    # operator runs `certd chargers approve CP1` (same DB write as the CLI)
                    assert charger_registry.update_charger(world, "CP1", registration="accepted")
                    r = await cp.call(boot16())   # charger retries after `interval`
                    assert r.status == "Accepted"
    run(main())


def test_a_v201_heartbeat_with_custom_data_is_answered(ca, ca_file, world):
    async def main():
        async with running(make_config(ca_file), world) as service:
            async with open_ws(service, "/ocpp/CP2", ca, subprotocols=["ocpp2.0.1"], headers=basic("CP2", PW)) as ws:
                await ws.send(json.dumps([2, "1", "BootNotification", {"chargingStation": {"model": "M", "vendorName": "V"}, "reason": "PowerUp"}]))
                assert json.loads(await ws.recv())[0] == 3
                await ws.send(json.dumps([2, "2", "Heartbeat", {"customData": {"vendorId": "com.example"}}]))
                ans = json.loads(await ws.recv())
                assert ans[0] == 3
    run(main())


def test_charger_supplied_strings_cannot_forge_log_lines(ca, ca_file, world, caplog):
    caplog.set_level(logging.INFO, logger="certd.ocpp")
    async def main():
        async with running(make_config(ca_file), world) as service:
            async with open_ws(service, "/ocpp/CP2", ca, headers=basic("CP2", PW)) as ws:
                async with charge_point(ws, "ocpp1.6", "CP2") as cp:
                    await cp.call(c16.BootNotification(charge_point_vendor="X\nFAKE ERROR cer", charge_point_model="M"))
                    await cp.call(c16.SecurityEventNotification(type="T", timestamp="2026-01-01T00:00:00+02:00",
                                  tech_info="a\nWARNING certd: forged line"))
    run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "\n" in m]
    assert any("X\\nFAKE ERROR cer" in m for m in messages)  # still there, escaped


def test_a_charger_that_leaves_mid_call_is_offline_at_once(ca, ca_file, world):
    async def main():
        async with running(make_config(ca_file), world) as service:
            prov = Provisioner(service, timeout=5)
            async with open_ws(service, "/ocpp/CP2", ca, headers=basic("CP2", PW)) as ws:
                async def drop():
                    await ws.recv()           # the InstallCertificate request arrives
                    await ws.close()          # charger goes away without answering
                t = asyncio.create_task(drop())
                t0 = time.monotonic()
                reply = await prov.install("CP2", ca.root_pem)
                assert reply.outcome == "offline", reply
                assert time.monotonic() - t0 < 4  # told at once, not after the 5 s timeout
    run(main())
