"""Per-charger requests against real simulated chargers: replies told apart, hash data, limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from certd.ocpp import charger_registry
from certd.ocpp.calls import normalize_serial, parse_hash_data
from certd.rollover.hashdata import cert_hash_data, hash_index, match_installed
from certd.rollover.provision import Provisioner
from certd.ocpp.service import OcppService
from certd.trust.certs import from_x509
from tests.ocpp.conftest import HOST, make_config
from tests.pki import MiniCA, store_current
from tests.rollover.conftest import run, until
from tests.rollover.sim import Behavior, SimCharger
from tests import pki


# -- CertID hash data (pure) -------------------------------------------------------------------

@pytest.mark.parametrize("algorithm, digest", [("SHA256", hashes.SHA256()), ("SHA384", hashes.SHA384()),
                                               ("SHA512", hashes.SHA512())])
def test_hash_data_matches_an_ocsp_certid(algorithm, digest) -> None:
    ec_root = pki.root("EC root")
    rsa_root = pki.root("RSA root", key=pki.rsa_key())
    cross = pki.cross_sign(ec_root, rsa_root)
    for cert, issuer in ((ec_root, ec_root), (rsa_root, rsa_root), (cross, rsa_root)):
        request = ocsp.OCSPRequestBuilder().add_certificate(cert.cert, issuer.cert, digest).build()
        assert cert_hash_data(cert.cert, issuer.cert, algorithm) == (
            algorithm, request.issuer_name_hash.hex(), request.issuer_key_hash.hex(),
            f"{request.serial_number:x}")


def test_reported_hash_data_is_normalized_and_matched() -> None:
    a, b = pki.root("A"), pki.root("B")
    bx = pki.cross_sign(b, a)
    known = [from_x509(c.cert) for c in (a, b, bx)]
    index = hash_index(known)
    reported = []
    for cert, issuer in ((a, a), (bx, a)):
        algorithm, name_hash, key_hash, serial = cert_hash_data(cert.cert, issuer.cert)
        reported.append(parse_hash_data({"hash_algorithm": "sha256", "issuer_name_hash": name_hash.upper(),
                                         "issuer_key_hash": key_hash.upper(), "serial_number": "0" + serial.upper()}))
    stranger = pki.root("Stranger")
    reported.append(cert_hash_data(stranger.cert, stranger.cert))
    held, unknown = match_installed(reported, index)
    assert held == {known[0].fingerprint, known[2].fingerprint} and unknown == 1
    assert parse_hash_data({"hash_algorithm": "SHA256"}) is None
    assert normalize_serial("0x00AB") == "ab" and normalize_serial("000") == "0"


# -- requests against simulated chargers ---------------------------------------------------------

@contextlib.asynccontextmanager
async def charger_world(engine, ca: MiniCA, ca_file, sims: list[SimCharger]) -> AsyncIterator[OcppService]:  # type: ignore[no-untyped-def]
    store_current(engine, "rsa", ca.issue([HOST], "rsa"))
    for sim in sims:
        charger_registry.insert_charger(engine, sim.charger_id, password_hash=None, heartbeat_class="default")
    service = OcppService(make_config(ca_file, unknown_chargers="accept"), engine)
    await service.start()
    port = service.listener("main").ports[0]
    try:
        for sim in sims:
            sim.start(f"wss://127.0.0.1:{port}/ocpp/{sim.charger_id}")
        await until(lambda: all(s.online.is_set() for s in sims), "sims online")
        await until(lambda: all(service.charger(s.charger_id) is not None for s in sims), "sessions")
        yield service
    finally:
        for sim in sims:
            await sim.stop()
        await service.close()


@pytest.fixture(scope="module")
def ca() -> MiniCA:
    return MiniCA("provision")


@pytest.fixture
def ca_file(ca: MiniCA, tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "root.pem"
    path.write_text(ca.root_pem)
    return path


@pytest.fixture
def engine(tmp_path):  # type: ignore[no-untyped-def]
    from certd.store.db import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'certd.db'}"
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


BEHAVIORS = ["accept", "reject", "fail", "not-implemented", "silent"]
EXPECTED = {"accept": "Accepted", "reject": "Rejected", "fail": "Failed", "not-implemented": "NotSupported",
            "silent": "timeout"}


@pytest.mark.parametrize("version", ["ocpp1.6", "ocpp2.0.1"])
def test_install_replies_are_told_apart(version, engine, ca, ca_file) -> None:
    new_root = pki.root("New root")
    sims = [SimCharger(f"{version[-3:]}-{b}", version, [ca.root_pem], HOST, Behavior(install=b))  # type: ignore[arg-type]
            for b in BEHAVIORS]

    async def main() -> None:
        async with charger_world(engine, ca, ca_file, sims) as service:
            provisioner = Provisioner(service, timeout=1.0)
            replies = await asyncio.gather(*(provisioner.install(s.charger_id, new_root.pem) for s in sims))
            assert {s.behavior.install: r.outcome for s, r in zip(sims, replies)} == EXPECTED
            assert "NotImplemented" in (replies[3].detail or "")
            assert "1s" in (replies[4].detail or "")
            assert sims[0].holds(new_root.cert) and not sims[1].holds(new_root.cert)
            offline = await provisioner.install("NOT-CONNECTED", new_root.pem)
            assert offline.outcome == "offline"

    run(main())


@pytest.mark.parametrize("version", ["ocpp1.6", "ocpp2.0.1"])
def test_installed_ids_and_store_facts(version, engine, ca, ca_file) -> None:
    sims = [SimCharger("LIMITS", version, [ca.root_pem], HOST,
                       Behavior(additional_root_check=True, store_max=3)),
            SimCharger("QUIET", version, [], HOST.replace("ocpp", "x"), Behavior(report_limits=False))]
    sims[1].trusted = [ca.root_pem]
    sims[1].host = HOST
    sims[1].__post_init__()

    async def main() -> None:
        async with charger_world(engine, ca, ca_file, sims) as service:
            provisioner = Provisioner(service, timeout=5.0)
            facts = await provisioner.facts("LIMITS")
            assert facts.additional_root_check is True
            if version == "ocpp1.6":  # CertificateStoreMaxLength; 1.6 has no count key
                assert facts.store_max == 3 and facts.store_used is None
            else:  # SecurityCtrlr.CertificateEntries: the count (the maximum is a characteristic)
                assert facts.store_max is None and facts.store_used == 1
            quiet = await provisioner.facts("QUIET")
            assert quiet.store_max is None and quiet.additional_root_check is None
            assert quiet.notes and "NotSupported" in quiet.notes[0]

            listing = await provisioner.installed("LIMITS")
            root = from_x509(ca.root)
            held, unknown = match_installed(listing.hash_data, hash_index([root]))
            assert listing.reply.ok and held == {root.fingerprint} and unknown == 0

            # A root signed by the held root's key is accepted under AdditionalRootCertificateCheck,
            # a self-signed stranger is not.
            stranger = pki.root("Stranger")
            assert (await provisioner.install("LIMITS", stranger.pem)).outcome == "Rejected"
            empty = SimCharger("EMPTY", version, [], HOST)
            assert empty.hash_data() == []

    run(main())
