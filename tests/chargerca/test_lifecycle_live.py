"""A charger certificate's life, with real clients: renewed at two thirds of a short validity,
renewed when the CA is replaced, a Rejected CertificateSigned retried with back-off, a
delivery to a charger that went offline repeated when it is back, the profile 2 -> 3 move
(2.0.1 SetNetworkProfile, 1.6 ChangeConfiguration), and a factory certificate replaced.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from certd.chargerca import ca_store, records
from certd.cli import main as certd_main
from certd.store.types import utcnow
from tests.chargerca.chargers import Charger, next_event, running_client
from tests.chargerca.conftest import (
    PASSWORD, connect, make_config, register, run, running, serve_certificate, server_trust,
)
from tests.chargerca.test_enroll_live import _boot
from tests.chargerca.test_refusals_live import _enrolled, audit, foreign_context, write_toml
from tests.pki import MiniCA


def test_renewal_is_triggered_at_two_thirds_of_a_short_validity(engine, ca, ca_file, tmp_path: Path) -> None:
    serve_certificate(engine, ca)
    config = make_config(ca_file, tmp_path, charger_ca={"leaf_validity_days": 6 / 86400, "check_interval": 0.1})
    register(engine, "CP-1")
    charger = Charger("CP-1")

    async def scenario() -> None:
        async with running(config, engine) as service:
            await _enrolled(service, ca, charger)
            tls = charger.tls(ca.root_pem, tmp_path / "client")
            async with connect(service, "p3", "CP-1", "ocpp2.0.1", ssl_context=tls) as ws:
                async with running_client(ws, "ocpp2.0.1", charger) as cp:
                    await _boot(cp, "ocpp2.0.1")
                    await next_event(charger, "CertificateSigned", timeout=12)

    run(scenario())
    first, second = records.certificates(engine, "CP-1")
    due = first.issued_at + (first.not_after - first.issued_at) * 2 / 3
    [trigger] = charger.trigger_times
    late = trigger - due.timestamp()
    assert 0 <= late < 1.5, late  # not before two thirds; soon after (check_interval 0.1 s)
    assert (first.state, second.state) == ("superseded", "active")
    assert second.issued_at >= due


def test_a_replaced_ca_renews_its_chargers_and_both_certificates_still_connect(
        p3_setup, ca, tmp_path: Path) -> None:
    config, engine = p3_setup
    register(engine, "CP-1")
    charger = Charger("CP-1")
    toml = write_toml(tmp_path, engine)

    async def scenario() -> None:
        async with running(config, engine) as service:
            await _enrolled(service, ca, charger)
            old_chain, old_key = charger.chain, charger.key
            tls = charger.tls(ca.root_pem, tmp_path / "old")
            async with connect(service, "p3", "CP-1", "ocpp2.0.1", ssl_context=tls) as ws:
                async with running_client(ws, "ocpp2.0.1", charger) as cp:
                    await _boot(cp, "ocpp2.0.1")
                    assert await asyncio.to_thread(certd_main, ["--config", str(toml), "charger-ca", "init",
                                                                "--replace"]) == 0
                    await next_event(charger, "CertificateSigned")
            assert charger.received[-2][0] == "TriggerMessage"
            for label, context in (("new", charger.tls(ca.root_pem, tmp_path / "new")),
                                   ("old", charger.tls(ca.root_pem, tmp_path / "old2", chain=old_chain,
                                                       key=old_key))):
                async with connect(service, "p3", "CP-1", "ocpp2.0.1", ssl_context=context) as ws:
                    async with running_client(ws, "ocpp2.0.1", charger) as cp:
                        assert await _boot(cp, "ocpp2.0.1") == "Accepted", label

    run(scenario())
    old, new = records.certificates(engine, "CP-1")
    rows = ca_store.ca_rows(engine)
    assert [(r.role, r.state) for r in rows] == [("issuing", "retired"), ("issuing", "active")]
    assert (old.ca_fingerprint, new.ca_fingerprint) == (rows[0].fingerprint, rows[1].fingerprint)
    assert (old.state, new.state) == ("superseded", "active")
    assert any("(ca-replaced): Accepted" in d for d in audit(engine, "certificate_renewal_requested"))


def test_rejected_certificate_is_recorded_and_asked_again_after_back_off(p3_setup, ca) -> None:
    config, engine = p3_setup
    register(engine, "CP-1")
    charger = Charger("CP-1", answer_signed="Rejected")
    records.request_renewal(engine, "CP-1", utcnow())

    async def scenario() -> None:
        async with running(config, engine) as service:
            async with connect(service, "p2", "CP-1", "ocpp2.0.1", ssl_context=server_trust(ca),
                               password=PASSWORD) as ws:
                async with running_client(ws, "ocpp2.0.1", charger) as cp:
                    await _boot(cp, "ocpp2.0.1")
                    await next_event(charger, "CertificateSigned")
                    charger.answer_signed = "Accepted"
                    await next_event(charger, "CertificateSigned")

    run(scenario())
    rejected, accepted = records.certificates(engine, "CP-1")
    assert (rejected.state, rejected.delivery) == ("rejected", "rejected")
    assert (accepted.state, accepted.delivery) == ("active", "accepted")
    gap = charger.trigger_times[1] - charger.trigger_times[0]
    assert gap >= 0.9  # retry_base = 1 s


def test_a_delivery_to_a_charger_that_left_is_repeated_when_it_is_back(p3_setup, ca) -> None:
    config, engine = p3_setup
    register(engine, "CP-1")
    charger = Charger("CP-1")

    async def scenario() -> None:
        from ocpp.v201 import call

        async with running(config, engine) as service:
            async with connect(service, "p2", "CP-1", "ocpp2.0.1", ssl_context=server_trust(ca),
                               password=PASSWORD) as ws:
                async with running_client(ws, "ocpp2.0.1", charger) as cp:
                    answer = await cp.call(call.SignCertificate(csr=charger.csr()))
                    assert answer.status == "Accepted"
            # Gone before CertificateSigned could be answered.
            assert service.charger_certs is not None and await service.charger_certs.wait_idle(10)
            [pending] = records.certificates(engine, "CP-1")
            assert (pending.state, pending.delivery, pending.delivery_attempts) == ("issued", "pending", 1)
            await asyncio.sleep(1.1)  # retry_base
            async with connect(service, "p2", "CP-1", "ocpp2.0.1", ssl_context=server_trust(ca),
                               password=PASSWORD) as ws:
                async with running_client(ws, "ocpp2.0.1", charger) as cp:
                    await _boot(cp, "ocpp2.0.1")
                    await next_event(charger, "CertificateSigned")

    run(scenario())
    [cert] = records.certificates(engine, "CP-1")
    assert (cert.state, cert.delivery) == ("active", "accepted")
    assert charger.leaf().serial_number == int(cert.serial, 16)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("version", ["ocpp1.6", "ocpp2.0.1"])
def test_move_from_profile_2_to_3(engine, ca, ca_file, tmp_path: Path, version: str) -> None:
    serve_certificate(engine, ca)
    port = free_port()
    move = {"url": f"wss://127.0.0.1:{port}/ocpp/", "url_key_16": "CentralSystemURL"}
    config = make_config(ca_file, tmp_path, charger_ca={"move": move, "auto_enroll": True},
                         profile3={"port": port})
    register(engine, "CP-1")
    charger = Charger("CP-1")

    async def scenario() -> None:
        async with running(config, engine) as service:
            async with connect(service, "p2", "CP-1", version, ssl_context=server_trust(ca),
                               password=PASSWORD) as ws:
                async with running_client(ws, version, charger) as cp:
                    await _boot(cp, version)  # auto_enroll: certd asks for a CSR
                    await next_event(charger, "CertificateSigned")
                    await next_event(charger, "ChangeConfiguration:SecurityProfile" if version == "ocpp1.6"
                                     else "SetVariables")
            if version == "ocpp1.6":
                changes = [p for a, p in charger.received if a == "ChangeConfiguration"]
                assert changes == [{"key": "CentralSystemURL", "value": move["url"] + "CP-1"},
                                   {"key": "SecurityProfile", "value": "3"}]
                target = changes[0]["value"]
            else:
                [profile] = [p for a, p in charger.received if a == "SetNetworkProfile"]
                data = profile["connection_data"]
                assert profile["configuration_slot"] == 1
                assert (data["security_profile"], data["ocpp_csms_url"], data["ocpp_version"]) == \
                    (3, move["url"], "OCPP20")
                [setvars] = [p for a, p in charger.received if a == "SetVariables"]
                assert setvars["set_variable_data"][0]["attribute_value"] == "1,0"
                target = data["ocpp_csms_url"] + "CP-1"
            from websockets.asyncio.client import connect as ws_connect

            tls = charger.tls(ca.root_pem, tmp_path / "client")
            async with ws_connect(target, ssl=tls, server_hostname="ocpp.example.test",
                                  subprotocols=[version]) as ws:  # type: ignore[list-item]
                async with running_client(ws, version, charger) as cp:
                    assert await _boot(cp, version) == "Accepted"
            with pytest.raises(InvalidStatus):
                async with connect(service, "p2", "CP-1", version, ssl_context=server_trust(ca),
                                   password=PASSWORD):
                    pass

    run(scenario())
    renewal = records.renewals(engine, ["CP-1"])["CP-1"]
    assert not renewal.move_pending and (renewal.last_result or "").startswith("moved to security profile 3")


def test_factory_certificate_admits_and_is_replaced(engine, ca, ca_file, tmp_path: Path) -> None:
    serve_certificate(engine, ca)
    factory = MiniCA("factory")
    factory_root = tmp_path / "factory-root.pem"
    factory_root.write_text(factory.root_pem)
    config = make_config(ca_file, tmp_path, profile3={"client_ca_files": [str(factory_root)]})
    register(engine, "CP-1", password=None)
    charger = Charger("CP-1")

    async def scenario() -> None:
        async with running(config, engine) as service:
            tls = foreign_context(charger, ca, factory, tmp_path / "factory")
            async with connect(service, "p3", "CP-1", "ocpp2.0.1", ssl_context=tls) as ws:
                async with running_client(ws, "ocpp2.0.1", charger) as cp:
                    await _boot(cp, "ocpp2.0.1")
                    await next_event(charger, "CertificateSigned")
            tls = charger.tls(ca.root_pem, tmp_path / "certd")
            async with connect(service, "p3", "CP-1", "ocpp2.0.1", ssl_context=tls) as ws:
                async with running_client(ws, "ocpp2.0.1", charger) as cp:
                    assert await _boot(cp, "ocpp2.0.1") == "Accepted"
                    assert service.charger("CP-1").client_cert.issued_by_certd  # type: ignore[union-attr]

    run(scenario())
    [cert] = records.certificates(engine, "CP-1")
    assert cert.state == "active" and cert.first_used_at is not None
    assert any("(factory-certificate): Accepted" in d for d in audit(engine, "certificate_renewal_requested"))
