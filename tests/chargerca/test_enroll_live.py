"""The whole path with real clients: key + CSR, certificate over profile 2, mutual TLS on profile 3.

For OCPP 1.6 (security extension) and 2.0.1: the charger asks on its own (A03) or
certd asks it (`certd chargers renew-cert`, A02); certd signs, sends CertificateSigned;
the charger reconnects to the profile-3 listener with its certificate and no password;
from then on its password no longer admits it on profile 2.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from websockets.exceptions import InvalidStatus

from certd.chargerca import ca_store, records
from certd.ocpp import charger_registry
from certd.store.types import utcnow
from tests.chargerca.chargers import ORG, Charger, next_event, running_client
from tests.chargerca.conftest import PASSWORD, connect, register, run, running, server_trust

VERSIONS = ["ocpp1.6", "ocpp2.0.1"]
TRIGGER = {"ocpp1.6": "ExtendedTriggerMessage", "ocpp2.0.1": "TriggerMessage"}


async def _boot(cp, version: str) -> str:  # type: ignore[no-untyped-def]
    if version == "ocpp1.6":
        from ocpp.v16 import call

        answer = await cp.call(call.BootNotification(charge_point_vendor="V", charge_point_model="M"))
    else:
        from ocpp.v201 import call

        answer = await cp.call(call.BootNotification(
            charging_station={"vendor_name": "V", "model": "M"}, reason="PowerUp"))
    return str(answer.status)


@pytest.mark.parametrize("version", VERSIONS)
def test_charger_asks_gets_certificate_and_reconnects_over_mutual_tls(p3_setup, ca, tmp_path: Path,
                                                                        version: str) -> None:
    config, engine = p3_setup
    register(engine, "CP-1")
    charger = Charger("CP-1")

    async def scenario() -> None:
        async with running(config, engine) as service:
            async with connect(service, "p2", "CP-1", version, ssl_context=server_trust(ca),
                               password=PASSWORD) as ws:
                async with running_client(ws, version, charger) as cp:
                    assert await cp.request_certificate() == "Accepted"
                    await next_event(charger, "CertificateSigned")
            leaf = charger.leaf()
            assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CP-1"
            assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == ORG
            eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
            leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            issuing = ca_store.load_issuing(engine, config)
            assert aki.key_identifier == issuing.cert.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier).value.digest
            leaf.verify_directly_issued_by(issuing.cert)
            assert 700 < (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 731

            # The charger's certificate, no password, on the profile-3 listener.
            tls = charger.tls(ca.root_pem, tmp_path / "client")
            async with connect(service, "p3", "CP-1", version, ssl_context=tls) as ws:
                async with running_client(ws, version, charger) as cp:
                    assert await _boot(cp, version) == "Accepted"
                    session = service.charger("CP-1")
                    assert session is not None and session.client_cert is not None
                    assert session.client_cert.serial == f"{leaf.serial_number:x}"

            # Its password is retired: profile 2 refuses it now.
            with pytest.raises(InvalidStatus) as refused:
                async with connect(service, "p2", "CP-1", version, ssl_context=server_trust(ca),
                                   password=PASSWORD):
                    pass
            assert refused.value.response.status_code == 401

    run(scenario())
    [cert] = records.certificates(engine, "CP-1")
    assert (cert.state, cert.delivery, cert.source) == ("active", "accepted", "csr")
    assert cert.first_used_at is not None
    assert charger_registry.lookup(engine, "CP-1").password_hash.startswith("!retired")


@pytest.mark.parametrize("version", VERSIONS)
def test_renew_cert_request_triggers_a_csr(p3_setup, ca, version: str) -> None:
    config, engine = p3_setup
    register(engine, "CP-2")
    charger = Charger("CP-2", key_kind="rsa2048")
    records.request_renewal(engine, "CP-2", utcnow())  # what `certd chargers renew-cert CP-2` stores

    async def scenario() -> None:
        async with running(config, engine) as service:
            async with connect(service, "p2", "CP-2", version, ssl_context=server_trust(ca),
                               password=PASSWORD) as ws:
                async with running_client(ws, version, charger) as cp:
                    await _boot(cp, version)
                    await next_event(charger, "CertificateSigned")
            assert service.charger_certs is not None
            assert await service.charger_certs.wait_idle(10)

    run(scenario())
    assert charger.received[0] == (TRIGGER[version], {"requested_message": (
        "SignChargePointCertificate" if version == "ocpp1.6" else "SignChargingStationCertificate")})
    [cert] = records.certificates(engine, "CP-2")
    assert (cert.state, cert.key_type) == ("active", "rsa2048")
    renewal = records.renewals(engine, ["CP-2"])["CP-2"]
    assert renewal.requested_at is None and renewal.attempts == 0  # done: nothing more to ask
    if version == "ocpp2.0.1":
        signed = [p for a, p in charger.received if a == "CertificateSigned"][0]
        assert signed["certificate_type"] == "ChargingStationCertificate"


def test_profile3_refuses_a_password_without_certificate(p3_setup, ca) -> None:
    config, engine = p3_setup
    register(engine, "CP-3")

    async def scenario() -> None:
        async with running(config, engine) as service:
            with pytest.raises(Exception) as failed:
                async with connect(service, "p3", "CP-3", "ocpp2.0.1", ssl_context=server_trust(ca),
                                   password=PASSWORD):
                    pass
            assert not isinstance(failed.value, asyncio.TimeoutError)

    run(scenario())
