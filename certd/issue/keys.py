"""Private keys, CSRs and certificate parsing: the few cryptography calls everyone needs."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_RSA_BITS = {"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}


def generate_key(key_type: str) -> PrivateKey:
    """RSA 2048 by default: GSM modules and several wallboxes reject ECDSA servers."""
    if key_type in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r}")


def key_type_of(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"rsa{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256"}.get(key.curve.name, f"ec-{key.curve.name}")
    return type(key).__name__


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(pem: str | bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


MAX_CN_LENGTH = 64  # RFC 5280 ub-common-name


def make_csr(key: PrivateKey, domains: list[str]) -> bytes:
    """CN = the first name that fits in a CN (OCPP chargers check the CN), every name in the SAN.

    A name longer than 64 characters cannot be a CN: the next one is used, and with none
    that fits the subject is left empty (the SAN alone names the certificate, as RFC 8555 allows).
    """
    common = next((d for d in domains if len(d) <= MAX_CN_LENGTH), None)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common)] if common else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name(subject)
    ).add_extension(
        x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def split_pem_chain(pem: str) -> list[str]:
    """Split concatenated PEM certificates into a list of single PEM strings."""
    marker = "-----END CERTIFICATE-----"
    parts = [p.strip() for p in pem.split(marker) if "-----BEGIN CERTIFICATE-----" in p]
    return [p[p.index("-----BEGIN CERTIFICATE-----"):] + "\n" + marker + "\n" for p in parts]


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


@dataclass(frozen=True)
class CertInfo:
    """What certd needs to know about a leaf certificate, parsed once."""

    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    issuer_cn: str
    domains: tuple[str, ...]
    key_type: str
    sha256: str

    @property
    def lifetime(self) -> dt.timedelta:
        return self.not_after - self.not_before


def cert_info(pem: str | bytes) -> CertInfo:
    cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        issuer_cn=common_name(cert.issuer),
        domains=names,
        key_type=key_type_of(cert.public_key()),
        sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def key_matches_cert(key: PrivateKey, cert_pem: str | bytes) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem.encode() if isinstance(cert_pem, str) else cert_pem)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        key.public_key().public_bytes(serialization.Encoding.DER, spki)
