"""A small test CA built with `cryptography`: root -> intermediate -> leaves (RSA or ECDSA).

Leaves go into the store as IssuedCertificate rows made current for a
ManagedCertificate name, the way the issuance flow leaves them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certd.store.db import session_scope
from certd.store.models import IssuedCertificate, ManagedCertificate
from certd.store.types import utcnow

_RSA_KEYS: list[rsa.RSAPrivateKey] = []


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key) -> str:  # type: ignore[no-untyped-def]
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def new_key(key_type: str):  # type: ignore[no-untyped-def]
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Leaf:
    cert_pem: str
    chain_pem: str
    key_pem: str
    serial: str
    key_type: str
    cert: x509.Certificate


class MiniCA:
    def __init__(self, name: str = "certd test") -> None:
        now = utcnow()
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} root")])
        self.root = (
            x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(self.root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.root_key, hashes.SHA256())
        )
        self.inter_key = ec.generate_private_key(ec.SECP256R1())
        inter_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} intermediate")])
        self.intermediate = (
            x509.CertificateBuilder().subject_name(inter_name).issuer_name(root_name)
            .public_key(self.inter_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1800))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.root_key, hashes.SHA256())
        )

    @property
    def root_pem(self) -> str:
        return _pem(self.root)

    @property
    def intermediate_pem(self) -> str:
        return _pem(self.intermediate)

    def issue(self, names: list[str], key_type: str = "rsa", *, days: float = 60,
              not_before: dt.datetime | None = None, key=None) -> Leaf:  # type: ignore[no-untyped-def]
        key = key or new_key(key_type)
        start = not_before or utcnow() - dt.timedelta(hours=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.intermediate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.inter_key, hashes.SHA256())
        )
        return Leaf(_pem(cert), self.intermediate_pem, _key_pem(key), f"{cert.serial_number:x}",
                    key_type, cert)


def store_current(engine, name: str, leaf: Leaf, *, chain_pem: str | None = None,
                  key_pem: str | None = None) -> int:  # type: ignore[no-untyped-def]
    """Insert `leaf` as a new issued certificate and make it current for `name`; returns its id."""
    with session_scope(engine) as session:
        row = IssuedCertificate(
            name=name,
            domains=",".join(n.value for n in leaf.cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value),
            key_type="ec-p256" if leaf.key_type == "ec" else "rsa2048",
            serial=leaf.serial,
            not_before=leaf.cert.not_valid_before_utc, not_after=leaf.cert.not_valid_after_utc,
            issuer=leaf.cert.issuer.rfc4514_string(),
            cert_pem=leaf.cert_pem,
            chain_pem=leaf.chain_pem if chain_pem is None else chain_pem,
            key_pem=key_pem or leaf.key_pem,
            chain_fingerprints=json.dumps([]),
            directory_url="test-ca",
        )
        session.add(row)
        session.flush()
        managed = session.get(ManagedCertificate, name) or ManagedCertificate(name=name)
        managed.current_id = row.id
        session.add(managed)
        assert row.id is not None
        return row.id
