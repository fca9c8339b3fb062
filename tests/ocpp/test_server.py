"""End to end over TLS with real `ocpp` clients: boot, heartbeat, auth, policies, ids, subprotocols."""

from __future__ import annotations

import asyncio

import pytest
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from sqlmodel import select
from websockets.exceptions import ConnectionClosed, InvalidStatus

from certd.ocpp import auth, charger_registry
from certd.sandbox.certd_config import ocpp_listener
from certd.store.chargers import Charger, ChargerAuditEvent
from certd.store.db import session_scope
from tests.ocpp.conftest import (
    HOST, PASSWORD, basic, boot16, boot201, charge_point, make_config, open_ws, register, run, running,
)
from tests.pki import store_current



@pytest.fixture
def world(ca, ca_file, engine):  # type: ignore[no-untyped-def]
    """Store with a current RSA certificate and two known chargers (gsm and default class)."""
    store_current(engine, "rsa", ca.issue([HOST], "rsa"))
    register(engine, "GSM-0001", heartbeat_class="gsm")
    register(engine, "DE*BMW*0123456789")
    return engine


def _status(exc_info: pytest.ExceptionInfo[InvalidStatus]) -> int:
    return exc_info.value.response.status_code


def _audit(engine) -> list[tuple[str, str | None, str | None]]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return [(e.kind, e.charger_id, e.detail) for e in session.exec(select(ChargerAuditEvent))]


def _charger(engine, charger_id: str) -> Charger:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return session.get(Charger, charger_id)


def test_v16_boot_gets_gsm_heartbeat_and_v201_gets_default(ca, ca_file, world) -> None:  # type: ignore[no-untyped-def]
    from ocpp.v16 import call as call16
    from ocpp.v201 import call as call201

    async def main() -> None:
        async with running(make_config(ca_file), world) as service:
            async with open_ws(service, "/ocpp/GSM-0001", ca, headers=basic("GSM-0001", PASSWORD)) as ws:
                assert ws.subprotocol == "ocpp1.6"
                async with charge_point(ws, "ocpp1.6", "GSM-0001") as cp:
                    result = await cp.call(boot16())
                    assert (result.status, result.interval) == ("Accepted", 60)
                    beat = await cp.call(call16.Heartbeat())
                    assert beat.current_time.endswith("Z")
                    await cp.call(call16.StatusNotification(
                        connector_id=1, error_code="NoError", status="Available"))
                    await cp.call(call16.SecurityEventNotification(
                        type="FirmwareUpdated", timestamp="2026-01-01T00:00:00Z", tech_info="v1.2.3"))
                    # An action certd does not handle: the library's NotImplemented CallError.
                    with pytest.raises(OcppNotImplemented):
                        await cp.call(call16.DataTransfer(vendor_id="x"), suppress=False)
            path = "/DE*BMW*0123456789"
            async with open_ws(service, path, ca, subprotocols=["ocpp2.0.1", "ocpp1.6"],
                               headers=basic("DE*BMW*0123456789", PASSWORD)) as ws:
                assert ws.subprotocol == "ocpp2.0.1"
                async with charge_point(ws, "ocpp2.0.1", "DE*BMW*0123456789") as cp:
                    result = await cp.call(boot201())
                    assert (result.status, result.interval) == ("Accepted", 300)
                    await cp.call(call201.Heartbeat())
                    await cp.call(call201.StatusNotification(
                        timestamp="2026-01-01T00:00:00Z", connector_status="Available",
                        evse_id=1, connector_id=1))
                    await cp.call(call201.NotifyEvent(
                        generated_at="2026-01-01T00:00:00Z", seq_no=0, event_data=[{
                            "event_id": 1, "timestamp": "2026-01-01T00:00:00Z",
                            "trigger": "Delta", "actual_value": "Available",
                            "event_notification_type": "HardWiredNotification",
                            "component": {"name": "Connector"}, "variable": {"name": "AvailabilityState"},
                        }]))
                    await cp.call(call201.SecurityEventNotification(
                        type="StartupOfTheDevice", timestamp="2026-01-01T00:00:00Z"))
                    ids = [c.charger_id for c in service.connected_chargers()]
                    assert ids == ["DE*BMW*0123456789"]
            await service.shared.writer.flush()
            gsm, bmw = _charger(world, "GSM-0001"), _charger(world, "DE*BMW*0123456789")
            assert (gsm.vendor, gsm.model, gsm.firmware_version, gsm.ocpp_version) == (
                "TestVendor", "GSM-1", "1.2.3", "ocpp1.6")
            assert (bmw.vendor, bmw.model, bmw.ocpp_version) == ("BMW", "Wallbox Plus", "ocpp2.0.1")
            assert gsm.first_seen is not None and gsm.last_seen is not None
        kinds = [(kind, cid) for kind, cid, _ in _audit(world)]
        assert ("security_event", "GSM-0001") in kinds and ("security_event", "DE*BMW*0123456789") in kinds
        assert _charger(world, "GSM-0001").connected_node is None  # closed service: offline

    run(main())


def test_percent_encoded_id_and_ocpp21(ca, ca_file, world) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running(make_config(ca_file), world) as service:
            async with open_ws(service, "/ocpp/DE%2ABMW%2A0123456789", ca, subprotocols=["ocpp2.1"],
                               headers=basic("DE*BMW*0123456789", PASSWORD)) as ws:
                assert ws.subprotocol == "ocpp2.1"
                async with charge_point(ws, "ocpp2.1", "DE*BMW*0123456789") as cp:
                    from ocpp.v21 import call

                    result = await cp.call(call.BootNotification(
                        charging_station={"vendor_name": "Mini", "model": "Wallbox"}, reason="PowerUp"))
                    assert result.status == "Accepted"
            with pytest.raises(InvalidStatus) as info:
                async with open_ws(service, "/ocpp/CP%2F1", ca, headers=basic("CP/1", PASSWORD)):
                    pass
            assert _status(info) == 400
            with pytest.raises(InvalidStatus) as info:
                async with open_ws(service, "/elsewhere/GSM-0001/x", ca, headers=basic("GSM-0001", PASSWORD)):
                    pass
            assert _status(info) == 404

    run(main())


def test_client_without_subprotocol_is_served_as_16(ca, ca_file, world) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running(make_config(ca_file), world) as service:
            async with open_ws(service, "/ocpp/GSM-0001", ca, subprotocols=None,
                               headers=basic("GSM-0001", PASSWORD)) as ws:
                assert ws.subprotocol is None
                async with charge_point(ws, "ocpp1.6", "GSM-0001") as cp:
                    assert (await cp.call(boot16())).status == "Accepted"
                assert service.charger("GSM-0001").version == "ocpp1.6"
            # Offering only versions the listener does not speak: handshake completes, then 1002.
            async with open_ws(service, "/ocpp/GSM-0001", ca, subprotocols=["ocpp1.5"],
                               headers=basic("GSM-0001", PASSWORD)) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd.code == 1002

    run(main())


def test_wrong_password_gets_bare_401_audit_and_rate_limit(ca, ca_file, world) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        config = make_config(ca_file, auth_failure_limit=3, auth_failure_window=300)
        async with running(config, world) as service:
            for headers in (basic("GSM-0001", "wrong-password-123"), {}, basic("OTHER", PASSWORD)):
                with pytest.raises(InvalidStatus) as info:
                    async with open_ws(service, "/ocpp/GSM-0001", ca, headers=headers):
                        pass
                assert _status(info) == 401
                body = info.value.response.body or b""
                assert b"password" not in body.lower() and b"GSM" not in body
                assert info.value.response.headers["WWW-Authenticate"].startswith("Basic")
            # The fourth attempt from this address is refused before any password check, even a right one.
            with pytest.raises(InvalidStatus) as info:
                async with open_ws(service, "/ocpp/GSM-0001", ca, headers=basic("GSM-0001", PASSWORD)):
                    pass
            assert _status(info) == 429 and int(info.value.response.headers["Retry-After"]) > 0
            await service.shared.writer.flush()
        assert [(k, c, d) for k, c, d in _audit(world)] == [
            ("auth_failed", "GSM-0001", "wrong password"),
            ("auth_failed", "GSM-0001", "no credentials"),
            ("auth_failed", "GSM-0001", "no credentials"),
        ]

    run(main())


def test_reconnect_replaces_the_old_connection_and_uses_the_credential_cache(ca, ca_file, world) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running(make_config(ca_file), world) as service:
            first = await open_ws(service, "/ocpp/GSM-0001", ca, headers=basic("GSM-0001", PASSWORD))
            async with open_ws(service, "/ocpp/GSM-0001", ca, headers=basic("GSM-0001", PASSWORD)) as second:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(first.recv(), 5)
                assert first.close_code == 1000
                async with charge_point(second, "ocpp1.6", "GSM-0001") as cp:
                    assert (await cp.call(boot16())).status == "Accepted"
                assert len(service.connected_chargers()) == 1
                await service.shared.writer.flush()
                assert _charger(world, "GSM-0001").connected_node == service.node

    run(main())


@pytest.mark.parametrize("policy, expected_status, expected_registration", [
    ("reject", None, None),
    ("register", "Pending", "pending"),
    ("accept", "Accepted", "accepted"),
])
def test_unknown_charger_policies(ca, ca_file, world, policy, expected_status, expected_registration) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running(make_config(ca_file, unknown_chargers=policy), world) as service:
            headers = basic("NEW-001", "first-use-password-42")
            if expected_status is None:
                with pytest.raises(InvalidStatus) as info:
                    async with open_ws(service, "/ocpp/NEW-001", ca, headers=headers):
                        pass
                assert _status(info) == 401
                assert charger_registry.lookup(world, "NEW-001") is None
                return
            async with open_ws(service, "/ocpp/NEW-001", ca, headers=headers) as ws:
                async with charge_point(ws, "ocpp1.6", "NEW-001") as cp:
                    assert (await cp.call(boot16())).status == expected_status
            await service.shared.writer.flush()  # first-contact rows are written in batches
            record = charger_registry.lookup(world, "NEW-001")
            assert record.registration == expected_registration
            assert auth.verify_password(record.password_hash, "first-use-password-42")
            # Trust on first use: the id is now bound to that password.
            with pytest.raises(InvalidStatus) as info:
                async with open_ws(service, "/ocpp/NEW-001", ca, headers=basic("NEW-001", "impostor-password-00")):
                    pass
            assert _status(info) == 401

    run(main())


def test_service_sends_requests_to_a_charger_one_at_a_time(ca, ca_file, world) -> None:  # type: ignore[no-untyped-def]
    """The handle a later feature uses (InstallCertificate) works from a task, serialized per charger."""
    from ocpp.routing import on
    from ocpp.v16 import ChargePoint, call, call_result

    in_flight, most = [0], [0]

    class Charger16(ChargePoint):
        @on("GetConfiguration")
        async def on_get_configuration(self, **_):  # type: ignore[no-untyped-def]
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            await asyncio.sleep(0.05)
            in_flight[0] -= 1
            return call_result.GetConfiguration(configuration_key=[
                {"key": "HeartbeatInterval", "readonly": False, "value": "60"}])

    async def main() -> None:
        async with running(make_config(ca_file), world) as service:
            async with open_ws(service, "/ocpp/GSM-0001", ca, headers=basic("GSM-0001", PASSWORD)) as ws:
                cp = Charger16("GSM-0001", ws)
                reader = asyncio.get_running_loop().create_task(cp.start())
                results = await asyncio.gather(*[
                    service.call("GSM-0001", call.GetConfiguration(key=["HeartbeatInterval"]), timeout=5)
                    for _ in range(3)])
                reader.cancel()
            assert [r.configuration_key[0]["value"] for r in results] == ["60"] * 3
            assert most[0] == 1
            with pytest.raises(LookupError):
                await service.call("NOT-CONNECTED", call.GetConfiguration())

    run(main())


def test_insecure_listener_is_profile_1_with_a_warning(ca_file, world, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from websockets.asyncio.client import connect

    listeners = [ocpp_listener("lan", HOST, insecure=True)]

    async def main() -> None:
        with caplog.at_level(logging.WARNING, logger="certd.ocpp"):
            async with running(make_config(ca_file, listeners=listeners), world) as service:
                assert any("security profile 1" in r.getMessage() for r in caplog.records)
                port = service.listener("lan").ports[0]
                url = f"ws://127.0.0.1:{port}/ocpp/GSM-0001"
                async with connect(url, subprotocols=["ocpp1.6"],
                                   additional_headers=basic("GSM-0001", PASSWORD)) as ws:
                    async with charge_point(ws, "ocpp1.6", "GSM-0001") as cp:
                        assert (await cp.call(boot16())).interval == 60
                with pytest.raises(InvalidStatus) as info:
                    async with connect(url, subprotocols=["ocpp1.6"],
                                       additional_headers=basic("GSM-0001", "wrong-password-000")):
                        pass
                assert _status(info) == 401

    run(main())


def test_debug_logging_never_shows_the_password(ca, ca_file, world, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    async def main() -> None:
        with caplog.at_level(logging.DEBUG):
            async with running(make_config(ca_file), world) as service:
                async with open_ws(service, "/ocpp/GSM-0001", ca, headers=basic("GSM-0001", PASSWORD)) as ws:
                    async with charge_point(ws, "ocpp1.6", "GSM-0001") as cp:
                        await cp.call(boot16())
                with pytest.raises(InvalidStatus):
                    async with open_ws(service, "/ocpp/GSM-0001", ca, headers=basic("GSM-0001", "not-the-password-1")):
                        pass

    run(main())
    server_side = [r for r in caplog.records if r.name.startswith("certd")]
    assert any("Authorization" in r.getMessage() for r in server_side)  # the header was logged...
    token = basic("GSM-0001", PASSWORD)["Authorization"].split()[1]
    wrong = basic("GSM-0001", "not-the-password-1")["Authorization"].split()[1]
    for record in server_side:
        message = record.getMessage()
        assert PASSWORD not in message and token not in message and wrong not in message  # ...redacted
