"""Chain choice and key/CSR helpers, on certificates made here."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certd.acme.chains import select_chain
from certd.keys import cert_info, generate_key, key_matches_cert, make_csr, split_pem_chain


def _cert(subject: str, issuer: str, key, signer) -> str:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .sign(signer, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def chain(*names: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pems = [_cert("leaf", names[0], key, key)]
    for subject, issuer in zip(names, [*names[1:], names[-1]]):
        pems.append(_cert(subject, issuer, key, key))
    return "".join(pems)


def test_preferred_issuer_matches_top_of_chain() -> None:
    default = chain("YR1", "Root YR", "ISRG Root X1")
    alternate = chain("YR2", "Root YR")
    assert select_chain([default, alternate], "Root YR") == alternate
    assert select_chain([default, alternate], "root yr") == alternate  # case-insensitive


def test_preferred_issuer_anywhere_then_default() -> None:
    default = chain("YR1", "Root YR", "ISRG Root X1")
    alternate = chain("YR2", "Other Root")
    assert select_chain([alternate, default], "YR1") == default
    assert select_chain([default, alternate], "No Such CA") == default
    assert select_chain([default, alternate], None) == default


def test_split_pem_chain_round_trip() -> None:
    pem = chain("A", "B")
    parts = split_pem_chain(pem)
    assert len(parts) == 3 and "".join(parts) == pem


def test_csr_cn_is_first_name_and_all_in_san() -> None:
    key = generate_key("rsa2048")
    csr = x509.load_pem_x509_csr(make_csr(key, ["local.example.com", "*.example.com"]))
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "local.example.com"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["local.example.com", "*.example.com"]
    assert key.key_size == 2048


def test_key_types_and_matching() -> None:
    ec_key = generate_key("ec-p256")
    pem = _cert("x", "x", ec_key, ec_key)
    assert cert_info(pem).key_type == "ec-p256"
    assert key_matches_cert(ec_key, pem)
    assert not key_matches_cert(generate_key("ec-p256"), pem)
