"""Facts about one CA certificate, parsed once: names, fingerprints, validity.

Everything downstream (paths, bundles, manifests, diffs) works on `CaCert`
values, so parsing and hashing happen in exactly one place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from certd.trust import TrustError

BEGIN = "-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class CaCert:
    """One certificate with the facts a bundle needs (hashable by fingerprint)."""

    fingerprint: str  # SHA-256 of the DER, lowercase hex
    subject: str  # RFC 4514
    issuer: str  # RFC 4514
    spki_sha256: str  # SHA-256 of the SubjectPublicKeyInfo DER, lowercase hex
    not_before: dt.datetime
    not_after: dt.datetime
    self_signed: bool
    pem: str  # canonical: re-encoded from DER, LF line ends, one trailing newline
    cert: x509.Certificate = field(compare=False, hash=False, repr=False)

    @property
    def common_name(self) -> str:
        attrs = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else self.subject

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def expired(self, now: dt.datetime) -> bool:
        return self.not_after <= now


def _signed_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """True when `parent`'s name and key issued `child` (signature checked)."""
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def issued_by(child: CaCert | x509.Certificate, parent: CaCert) -> bool:
    cert = child.cert if isinstance(child, CaCert) else child
    return _signed_by(cert, parent.cert)


def from_x509(cert: x509.Certificate) -> CaCert:
    der = cert.public_bytes(serialization.Encoding.DER)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CaCert(
        fingerprint=hashlib.sha256(der).hexdigest(),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        spki_sha256=hashlib.sha256(spki).hexdigest(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        self_signed=_signed_by(cert, cert),
        pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        cert=cert,
    )


def parse_pem_bundle(text: str | bytes, source: str) -> list[CaCert]:
    """Every certificate in a PEM text, in order; a broken block is an error naming `source`."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else text
    if BEGIN.encode() not in data:
        return []
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TrustError(f"{source}: not a valid PEM certificate list ({exc})") from None
    return [from_x509(c) for c in certs]


def parse_one(pem: str, source: str) -> CaCert:
    certs = parse_pem_bundle(pem, source)
    if len(certs) != 1:
        raise TrustError(f"{source}: expected one PEM certificate, found {len(certs)}")
    return certs[0]
