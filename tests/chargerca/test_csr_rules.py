"""Which CSRs certd signs (pure): every rule of certd.chargerca.csr, each alone."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519
from cryptography.x509.oid import NameOID

from certd.chargerca import csr
from tests.chargerca.chargers import ORG, make_csr, new_key, tamper_signature

OK = csr.Standing(enabled=True, approved=True)
KEYS: dict[str, object] = {}


def key(kind: str):  # type: ignore[no-untyped-def]
    if kind not in KEYS:  # RSA keys are slow to make: one of each kind per run
        KEYS[kind] = new_key(kind)
    return KEYS[kind]


def check(pem: str, charger_id: str = "CP-1", standing: csr.Standing | None = OK,
          organization: str | None = ORG, certificate_type: str | None = None) -> csr.Decision:
    return csr.check_csr(pem, charger_id, standing, organization, certificate_type)


@pytest.mark.parametrize("kind,key_type", [("ec", "ec-p256"), ("ec384", "ec-p384"),
                                           ("rsa2048", "rsa2048"), ("rsa3072", "rsa3072")])
def test_accepted_keys(kind: str, key_type: str) -> None:
    decision = check(make_csr(key(kind), "CP-1"))
    assert isinstance(decision, csr.Accepted) and decision.key_type == key_type
    assert len(decision.csr_sha256) == 64


@pytest.mark.parametrize("make_key,problem", [
    (lambda: new_key("rsa1024"), "RSA key of 1024 bits"),
    (lambda: ec.generate_private_key(ec.SECP521R1()), "EC curve secp521r1"),
    (lambda: ec.generate_private_key(ec.SECP224R1()), "EC curve secp224r1"),
    (lambda: ed25519.Ed25519PrivateKey.generate(), "Ed25519PublicKey key"),
    (lambda: dsa.generate_private_key(2048), "DSAPublicKey key"),
])
def test_weak_or_other_keys_are_refused(make_key, problem: str) -> None:  # type: ignore[no-untyped-def]
    private = make_key()
    algorithm = None if isinstance(private, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG), x509.NameAttribute(NameOID.COMMON_NAME, "CP-1")]))
    pem = builder.sign(private, algorithm).public_bytes(serialization.Encoding.PEM).decode()
    decision = check(pem)
    assert isinstance(decision, csr.Refused) and decision.code == "WeakKey"
    assert problem in decision.reason


def test_rsa_exponent_other_than_65537_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    odd = rsa.generate_private_key(public_exponent=3, key_size=2048)
    decision = check(make_csr(odd, "CP-1"))
    assert isinstance(decision, csr.Refused) and "exponent" in decision.reason


def test_a_bad_signature_is_refused() -> None:
    decision = check(tamper_signature(make_csr(key("ec"), "CP-1")))
    assert decision == csr.Refused("the CSR's signature does not verify", "InvalidSignature")


def test_sha1_signed_csr_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import subprocess

    if shutil.which("openssl") is None:  # cryptography no longer signs with SHA-1; OpenSSL still does
        pytest.skip("openssl command not installed")
    key_file = tmp_path / "k.pem"
    key_file.write_bytes(key("rsa2048").private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pem = subprocess.run(["openssl", "req", "-new", "-key", str(key_file), "-sha1",
                          "-subj", f"/O={ORG}/CN=CP-1"], capture_output=True, text=True, check=True).stdout
    decision = check(pem)
    assert isinstance(decision, csr.Refused) and "sha1" in decision.reason


@pytest.mark.parametrize("common_name,organization,fragment", [
    ("CP-2", ORG, "is not the charger's identity 'CP-1'"),
    ("cp-1", ORG, "is not the charger's identity"),          # exact, case-sensitive
    ("CP-1", "Someone Else", "not the operator 'Test Operator'"),
    ("CP-1", None, "the subject O is none"),
])
def test_subject_must_name_this_charger_and_the_operator(common_name: str, organization: str | None,
                                                         fragment: str) -> None:
    decision = check(make_csr(key("ec"), common_name, organization))
    assert isinstance(decision, csr.Refused) and decision.code == "WrongIdentity"
    assert fragment in decision.reason


def test_an_ip_address_as_identity_is_refused() -> None:
    decision = check(make_csr(key("ec"), "10.0.0.7"), charger_id="10.0.0.7")
    assert isinstance(decision, csr.Refused) and "A00.FR.511" in decision.reason


def test_two_common_names_are_refused() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                      x509.NameAttribute(NameOID.COMMON_NAME, "CP-1"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "CP-2")])
    pem = (x509.CertificateSigningRequestBuilder().subject_name(name).sign(key("ec"), hashes.SHA256())
           .public_bytes(serialization.Encoding.PEM).decode())
    decision = check(pem)
    assert isinstance(decision, csr.Refused) and "exactly one CN (it has 2)" in decision.reason


def test_organization_unchecked_when_none_configured() -> None:
    assert isinstance(check(make_csr(key("ec"), "CP-1", "Anyone"), organization=None), csr.Accepted)


@pytest.mark.parametrize("standing,code", [(None, "UnknownCharger"),
                                           (csr.Standing(False, True), "ChargerDisabled"),
                                           (csr.Standing(True, False), "NotApproved")])
def test_only_enabled_and_approved_chargers_get_certificates(standing, code: str) -> None:  # type: ignore[no-untyped-def]
    decision = check(make_csr(key("ec"), "CP-1"), standing=standing)
    assert isinstance(decision, csr.Refused) and decision.code == code


def test_v2g_certificates_are_out_of_scope() -> None:
    decision = check(make_csr(key("ec"), "CP-1"), certificate_type="V2GCertificate")
    assert decision == csr.Refused("V2GCertificate requested: ISO 15118 certificates are out of scope",
                                   "NotSupported")
    assert isinstance(check(make_csr(key("ec"), "CP-1"), certificate_type="ChargingStationCertificate"),
                      csr.Accepted)


@pytest.mark.parametrize("text", ["", "not a csr", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                  "-----END CERTIFICATE REQUEST-----\n", "\u00e9\u0000"])
def test_garbage_is_refused_without_echoing_it(text: str) -> None:
    decision = check(text)
    assert isinstance(decision, csr.Refused) and decision.code == "InvalidCSR"
    assert "\u0000" not in decision.reason


def test_oversized_csr_is_refused() -> None:
    decision = check("A" * (csr.MAX_CSR_CHARS + 1))
    assert isinstance(decision, csr.Refused) and "5501 characters" in decision.reason


def test_charger_strings_in_reasons_are_escaped() -> None:
    decision = check(make_csr(key("ec"), "CP-1\nforged log line"))
    assert isinstance(decision, csr.Refused) and "\n" not in decision.reason
    assert "\\n" in decision.reason
