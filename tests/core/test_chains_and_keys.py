"""Chain choice and key/CSR helpers, on certificates made here."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certd.issue.chains import select_chain
from certd.issue.keys import cert_info, generate_key, key_matches_cert, make_csr, split_pem_chain


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


def test_csr_cn_skips_names_too_long_for_a_cn() -> None:
    """CN is at most 64 characters (RFC 5280); a longer first name must not fail every order."""
    key = generate_key("rsa2048")
    long_name = "a" * 60 + ".example.com"  # 72 characters: valid DNS name, too long for a CN
    csr = x509.load_pem_x509_csr(make_csr(key, [long_name, "short.example.com"]))
    assert [a.value for a in csr.subject] == ["short.example.com"]
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [long_name, "short.example.com"]
    only_long = x509.load_pem_x509_csr(make_csr(key, [long_name]))
    assert list(only_long.subject) == []  # SAN alone names it


def test_retry_after_is_bounded_and_only_ascii_seconds() -> None:
    from certd.retry_after import MAX_RETRY_AFTER_S, parse_retry_after

    now = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
    assert parse_retry_after("120", now) == now + dt.timedelta(seconds=120)
    for huge in ("300000000000", "1" * 5000):  # would overflow the date / int parsing
        assert parse_retry_after(huge, now) == now + dt.timedelta(seconds=MAX_RETRY_AFTER_S)
    assert parse_retry_after("\u00b2", now) is None  # a "digit" that is no number


def test_a_self_signed_certificate_that_is_not_a_ca_is_no_trust_anchor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from certd.trust.anchors import load_anchor_set

    now = dt.datetime.now(dt.timezone.utc)

    def self_signed(cn: str, ca: bool) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(7).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=300))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True).sign(key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)

    (tmp_path / "server.pem").write_bytes(self_signed("server.lan", ca=False))
    (tmp_path / "root.pem").write_bytes(self_signed("Lab Root", ca=True))
    anchors = load_anchor_set("lab", str(tmp_path))
    assert [c.common_name for c in anchors.certs] == ["Lab Root"]
