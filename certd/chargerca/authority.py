"""The charger CA's certificate work: make CA certificates, sign charger certificates, a CRL.

Crypto only (no store, no files): `certd.chargerca.ca_store` keeps what this makes.

A charger certificate (OCPP "Certificate Properties", see `certd.chargerca.csr`):
subject CN = the charger id, O = the operator; the CSR's public key; a random 159-bit
serial; clientAuth extended key usage, digitalSignature key usage, not a CA;
subject and authority key identifiers; valid from five minutes ago (chargers' clocks
drift) for `leaf_validity_days`, never past the issuing CA. Signed with SHA-256 (SHA-384
by a P-384 CA): PKCS#1 v1.5 for RSA, which every charger TLS stack verifies (OCPP's
A00.FR.505 prefers RSA-PSS or ECDSA: choose `key_type = "ec-p256"` for ECDSA).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLOCK_SKEW = dt.timedelta(minutes=5)


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def new_key(key_type: str) -> PrivateKeyTypes:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa2048", "rsa3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    raise ValueError(f"unknown CA key type {key_type!r}")


def _hash_for(key: PrivateKeyTypes) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ski(public_key: CertificatePublicKeyTypes) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)  # type: ignore[arg-type]


def make_ca(key: PrivateKeyTypes, common_name: str, organization: str, now: dt.datetime,
            days: int, *, issuer_cert: x509.Certificate | None = None,
            issuer_key: PrivateKeyTypes | None = None, path_length: int = 0) -> x509.Certificate:
    """A CA certificate: self-signed (a root) unless an issuer is given (an issuing CA)."""
    subject = _name(common_name, organization)
    signer = issuer_key or key
    not_after = now + dt.timedelta(days=days)
    if issuer_cert is not None:
        not_after = min(not_after, issuer_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)  # type: ignore[arg-type]
    )
    if issuer_cert is not None:
        builder = builder.add_extension(_aki(issuer_cert), critical=False)
    return builder.sign(signer, _hash_for(signer))  # type: ignore[arg-type]


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]


@dataclass(frozen=True)
class IssuingCa:
    """The CA that signs charger certificates, loaded for signing (key held in memory only)."""

    cert: x509.Certificate
    key: PrivateKeyTypes = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()  # its issuers up to the root, nearest first

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    def chain_pem(self) -> str:
        """What a charger gets after its certificate: the issuing CA and any intermediates
        (the self-signed root, the trust anchor, is left out unless it is the issuing CA)."""
        certs = [self.cert] + [c for c in self.chain if c.issuer != c.subject]
        return "".join(cert_pem(c) for c in certs)


def sign_leaf(ca: IssuingCa, public_key: CertificatePublicKeyTypes, charger_id: str,
              organization: str, validity_days: float, now: dt.datetime) -> x509.Certificate:
    """The charger certificate for a checked CSR's key (see the module docstring)."""
    not_after = min(now + dt.timedelta(days=validity_days), ca.cert.not_valid_after_utc)
    key_usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              key_cert_sign=False, crl_sign=False, encipher_only=False,
                              decipher_only=False)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(charger_id, organization))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(ca.cert), critical=False)
        .sign(ca.key, _hash_for(ca.key))  # type: ignore[arg-type]
    )


def issued_by(cert: x509.Certificate, candidates: Iterable[x509.Certificate]) -> x509.Certificate | None:
    """The candidate that signed `cert` directly (name and signature), if any."""
    for issuer in candidates:
        if cert.issuer != issuer.subject:
            continue
        try:
            cert.verify_directly_issued_by(issuer)
        except Exception:  # InvalidSignature, ValueError, TypeError: not this one
            continue
        return issuer
    return None


def build_crl(ca: IssuingCa, revoked: Sequence[tuple[str, dt.datetime]], now: dt.datetime,
              next_update: dt.timedelta = dt.timedelta(days=7)) -> str:
    """A PEM CRL of the revoked charger certificates this CA issued (serials in hex)."""
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca.cert.subject)
               .last_update(now - CLOCK_SKEW)
               .next_update(now + next_update)
               .add_extension(_aki(ca.cert), critical=False))
    for serial, at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(at).build())
    crl = builder.sign(ca.key, _hash_for(ca.key))  # type: ignore[arg-type]
    return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")
