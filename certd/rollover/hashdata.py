"""Map what a charger reports holding back to certificates certd knows.

GetInstalledCertificateIds reports installed certificates as hash data, as in an
OCSP CertID (RFC 6960): the hash of the issuer's name, of the issuer's public key,
and the serial number. `hash_index` computes those for every certificate certd
knows, so a report maps back to fingerprints (`match_installed`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certd.ocpp.calls import HashData, normalize_serial
from certd.trust.certs import CaCert, issued_by

HASH_ALGORITHMS = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}


def _read_der_length(data: bytes, offset: int) -> tuple[int, int]:
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    return int.from_bytes(data[offset + 1:offset + 1 + count], "big"), offset + 1 + count


def public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's key bytes (what OCSP's issuerKeyHash hashes)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    if spki[0] != 0x30:
        raise ValueError("SubjectPublicKeyInfo is not a DER SEQUENCE")
    _, offset = _read_der_length(spki, 1)
    if spki[offset] != 0x30:  # AlgorithmIdentifier
        raise ValueError("SubjectPublicKeyInfo lacks its AlgorithmIdentifier")
    length, start = _read_der_length(spki, offset + 1)
    offset = start + length
    if spki[offset] != 0x03:
        raise ValueError("SubjectPublicKeyInfo lacks its BIT STRING")
    length, start = _read_der_length(spki, offset + 1)
    return spki[start + 1:start + length]  # skip the unused-bits octet


def cert_hash_data(cert: x509.Certificate, issuer: x509.Certificate,
                   algorithm: str = "SHA256") -> HashData:
    """(algorithm, issuerNameHash, issuerKeyHash, serialNumber) for `cert`, lowercase hex."""
    digest = HASH_ALGORITHMS[algorithm]
    name_hash = digest(cert.issuer.public_bytes()).hexdigest()
    key_hash = digest(public_key_bits(issuer)).hexdigest()
    return algorithm, name_hash, key_hash, normalize_serial(f"{cert.serial_number:x}")


def _issuer_of(cert: CaCert, pool: Sequence[CaCert]) -> CaCert | None:
    if cert.self_signed:
        return cert
    for candidate in pool:
        if candidate.subject == cert.issuer and issued_by(cert, candidate):
            return candidate
    return None


def hash_index(known: Iterable[CaCert],
               algorithms: Iterable[str] = tuple(HASH_ALGORITHMS)) -> dict[HashData, str]:
    """Hash data -> fingerprint for every known certificate whose issuer is known too."""
    certs = list(known)
    index: dict[HashData, str] = {}
    for cert in certs:
        issuer = _issuer_of(cert, certs)
        if issuer is None:
            continue
        for algorithm in algorithms:
            index[cert_hash_data(cert.cert, issuer.cert, algorithm)] = cert.fingerprint
    return index


def match_installed(reported: Iterable[HashData], index: Mapping[HashData, str]) -> tuple[set[str], int]:
    """(fingerprints of known certificates held, count of installed ones certd does not know)."""
    held: set[str] = set()
    unknown = 0
    for data in set(reported):
        fingerprint = index.get(data)
        if fingerprint is None:
            unknown += 1
        else:
            held.add(fingerprint)
    return held, unknown
