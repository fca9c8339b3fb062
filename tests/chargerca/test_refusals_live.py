"""What certd refuses, over real connections: bad CSRs, withdrawn and foreign certificates.

CSRs with a bad signature, a weak key, the wrong identity, from a disabled charger, or for
ISO 15118 are answered Rejected and recorded; a certificate revoked by `certd chargers
revoke-cert` in another process (through the store) closes the live connection and is
refused from then on; expired and foreign-CA certificates never finish the TLS handshake.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlmodel import select
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from certd.chargerca import authority, ca_store, records
from certd.cli import main as certd_main
from certd.ocpp import charger_registry
from certd.store.charger_ca import ChargerCsrRequest
from certd.store.chargers import ChargerAuditEvent
from certd.store.db import session_scope
from certd.store.types import utcnow
from tests.chargerca.chargers import ORG, Charger, make_csr, new_key, next_event, running_client, tamper_signature
from tests.chargerca.conftest import PASSWORD, connect, register, run, running, server_trust
from tests.pki import MiniCA


def audit(engine, kind: str) -> list[str]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        rows = session.exec(select(ChargerAuditEvent).where(ChargerAuditEvent.kind == kind)).all()
        return [row.detail or "" for row in rows]


def requests(engine) -> list[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        rows = session.exec(select(ChargerCsrRequest).order_by(ChargerCsrRequest.id)).all()  # type: ignore[arg-type]
        return [(r.decision, r.reason) for r in rows]


BAD_CSRS = {
    "bad signature": (lambda: tamper_signature(make_csr(new_key("ec"), "CP-1")), "InvalidSignature"),
    "weak key": (lambda: make_csr(new_key("rsa1024"), "CP-1"), "WeakKey"),
    "wrong identity": (lambda: make_csr(new_key("ec"), "CP-2"), "WrongIdentity"),
    "wrong operator": (lambda: make_csr(new_key("ec"), "CP-1", "Other GmbH"), "WrongIdentity"),
}


@pytest.mark.parametrize("version", ["ocpp1.6", "ocpp2.0.1"])
def test_bad_csrs_and_a_disabled_charger_are_refused(p3_setup, ca, version: str) -> None:
    config, engine = p3_setup
    register(engine, "CP-1")
    charger = Charger("CP-1")
    answers: dict[str, tuple[str, str | None]] = {}

    async def scenario() -> None:
        if version == "ocpp1.6":
            from ocpp.v16 import call
        else:
            from ocpp.v201 import call
        async with running(config, engine) as service:
            async with connect(service, "p2", "CP-1", version, ssl_context=server_trust(ca),
                               password=PASSWORD) as ws:
                async with running_client(ws, version, charger) as cp:
                    cases = dict(BAD_CSRS)
                    if version != "ocpp1.6":
                        cases["V2G"] = (lambda: make_csr(new_key("ec"), "CP-1"), "NotSupported")
                    for name, (make, _) in cases.items():
                        payload = ({"certificate_type": "V2GCertificate"} if name == "V2G" else {})
                        answer = await cp.call(call.SignCertificate(csr=make(), **payload))
                        info = getattr(answer, "status_info", None)
                        answers[name] = (answer.status, info.get("reason_code") if info else None)
                    charger_registry.update_charger(engine, "CP-1", enabled=False)
                    answer = await cp.call(call.SignCertificate(csr=make_csr(new_key("ec"), "CP-1")))
                    answers["disabled"] = (answer.status, None)
                    await asyncio.sleep(0.3)  # nothing may follow a Rejected
            await service.shared.writer.flush()
            assert service.charger_certs is not None and await service.charger_certs.wait_idle(5)

    run(scenario())
    for name, (_, code) in BAD_CSRS.items():
        assert answers[name] == ("Rejected", None if version == "ocpp1.6" else code), name
    assert answers["disabled"][0] == "Rejected"
    if version != "ocpp1.6":
        assert answers["V2G"] == ("Rejected", "NotSupported")
    assert not [a for a, _ in charger.received if a == "CertificateSigned"]
    assert records.certificates(engine, "CP-1") == []
    decisions = requests(engine)
    assert [d for d, _ in decisions] == ["refused"] * len(decisions) and len(decisions) == len(answers)
    reasons = " | ".join(r or "" for _, r in decisions)
    for fragment in ("signature does not verify", "RSA key of 1024 bits", "'CP-2'", "'Other GmbH'",
                     "the charger is disabled"):
        assert fragment in reasons
    assert len(audit(engine, "csr_refused")) == len(answers)


def _cli(config_path: Path, *args: str) -> int:
    return certd_main(["--config", str(config_path), *args])


def write_toml(tmp_path: Path, engine) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "certd.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\ndatabase_url = "{engine.url}"\n\n'
                    f'[ocpp.charger_ca]\norganization = "{ORG}"\nkey_dir = "{tmp_path / "ca-keys"}"\n'
                    'revocation_check_interval = 0.2\n')
    return path


async def _enrolled(service, ca: MiniCA, charger: Charger, version: str = "ocpp2.0.1") -> None:  # type: ignore[no-untyped-def]
    async with connect(service, "p2", charger.charger_id, version, ssl_context=server_trust(ca),
                       password=PASSWORD) as ws:
        async with running_client(ws, version, charger) as cp:
            assert await cp.request_certificate() == "Accepted"
            await next_event(charger, "CertificateSigned")


@pytest.mark.parametrize("withdraw", ["revoke-cert", "disable", "remove"])
def test_withdrawn_certificate_connection_is_closed_live_and_refused_after(
        p3_setup, ca, tmp_path: Path, capsys, withdraw: str) -> None:  # type: ignore[no-untyped-def]
    config, engine = p3_setup
    register(engine, "CP-1")
    charger = Charger("CP-1")
    toml = write_toml(tmp_path, engine)
    timings: dict[str, float] = {}

    async def scenario() -> None:
        async with running(config, engine) as service:
            await _enrolled(service, ca, charger)
            tls = charger.tls(ca.root_pem, tmp_path / "client")
            loop = asyncio.get_running_loop()
            async with connect(service, "p3", "CP-1", "ocpp2.0.1", ssl_context=tls) as ws:
                async with running_client(ws, "ocpp2.0.1", charger):
                    assert service.charger("CP-1") is not None
                    start = loop.time()
                    # Another process: the CLI, which only shares the store with the service.
                    args = {"revoke-cert": ("chargers", "revoke-cert", "CP-1"),
                            "disable": ("chargers", "disable", "CP-1"),
                            "remove": ("chargers", "remove", "CP-1")}[withdraw]
                    assert await asyncio.to_thread(_cli, toml, *args) == 0
                    await asyncio.wait_for(ws.wait_closed(), 5)
                    timings["closed after"] = loop.time() - start
                    assert ws.close_code == 1008
            with pytest.raises(InvalidStatus) as refused:
                async with connect(service, "p3", "CP-1", "ocpp2.0.1", ssl_context=tls):
                    pass
            assert refused.value.response.status_code == 403
            await service.shared.writer.flush()

    run(scenario())
    assert timings["closed after"] < 2.0  # revocation_check_interval = 0.2 s
    assert len(audit(engine, "certificate_connection_closed")) == 1
    if withdraw == "revoke-cert":
        assert "revoked CP-1 serial" in capsys.readouterr().out
        [cert] = records.certificates(engine, "CP-1")
        assert cert.state == "revoked" and cert.revoked_at is not None
        assert any("is revoked" in d for d in audit(engine, "auth_failed"))


def expired_context(engine, config, charger: Charger, ca: MiniCA, directory: Path) -> ssl.SSLContext:  # type: ignore[no-untyped-def]
    """A certificate certd issued (and holds as usable) that expired yesterday."""
    issuing = ca_store.load_issuing(engine, config)
    key = new_key("ec")
    past = utcnow() - dt.timedelta(days=3)
    leaf = authority.sign_leaf(issuing, key.public_key(), charger.charger_id, ORG, 1, past)
    issued = records.store_issued(engine, issuing, leaf, charger.charger_id, "ec-p256", past,
                                  listener=None, version=None, csr_sha256=None)
    context = server_trust(ca)
    context.load_cert_chain(*charger.files(directory, chain=issued.chain_pem, key=key))
    return context


def foreign_context(charger: Charger, ca: MiniCA, foreign: MiniCA, directory: Path) -> ssl.SSLContext:
    """A client certificate with the right subject from a CA certd does not trust."""
    key = new_key("ec")
    now = utcnow()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                                     x509.NameAttribute(NameOID.COMMON_NAME, charger.charger_id)]))
            .issuer_name(foreign.intermediate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(foreign.intermediate_ca.key, hashes.SHA256()))
    context = server_trust(ca)
    context.load_cert_chain(*charger.files(directory, chain=authority.cert_pem(cert) + foreign.intermediate_pem,
                                           key=key))
    return context


async def handshake_fails(service, tls: ssl.SSLContext) -> BaseException:  # type: ignore[no-untyped-def]
    try:
        async with connect(service, "p3", "CP-1", "ocpp2.0.1", ssl_context=tls) as ws:
            await ws.recv()
    except (ssl.SSLError, OSError, InvalidHandshake, ConnectionClosed) as exc:
        return exc
    raise AssertionError("the connection was admitted")


def test_expired_and_foreign_certificates_fail_the_handshake(p3_setup, ca, tmp_path: Path) -> None:
    config, engine = p3_setup
    register(engine, "CP-1")
    charger = Charger("CP-1")

    async def scenario() -> None:
        async with running(config, engine) as service:
            failures = [await handshake_fails(service, expired_context(engine, config, charger, ca,
                                                                     tmp_path / "expired"))]
            failures.append(await handshake_fails(service, foreign_context(charger, ca, MiniCA("foreign"),
                                                                          tmp_path / "foreign")))
            # No HTTP answer at all (a 403 would mean the handshake finished): TLS refused them.
            assert not any(isinstance(failure, InvalidStatus) for failure in failures), failures
            assert service.charger("CP-1") is None and service.shared.sessions == {}

    run(scenario())
