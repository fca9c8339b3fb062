"""A tiny CA factory for tests: roots, intermediates, cross-signs and leaves with `cryptography`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


_RSA_CACHE: list[rsa.RSAPrivateKey] = []


def rsa_key(fresh: bool = False) -> rsa.RSAPrivateKey:
    """RSA keys are slow to make: tests share a few unless they need a distinct one."""
    if fresh or len(_RSA_CACHE) < 3:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if len(_RSA_CACHE) < 3:
            _RSA_CACHE.append(key)
        return key
    return _RSA_CACHE[0]


@dataclass
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def name(self) -> x509.Name:
        return self.cert.subject


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certd tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _build(subject: x509.Name, issuer_name: x509.Name, public_key, signing_key, *, ca: bool,
           not_before: dt.datetime, not_after: dt.datetime, sans: list[str] | None = None,
           path_len: int | None = None) -> x509.Certificate:
    import secrets

    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(public_key).serial_number(int.from_bytes(secrets.token_bytes(8), "big") >> 1)
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len if ca else None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in sans or []]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def root(cn: str, *, key=None, days: int = 3650, not_after: dt.datetime | None = None) -> Ca:
    key = key or ec_key()
    cert = _build(_name(cn), _name(cn), key.public_key(), key, ca=True,
                  not_before=NOW - dt.timedelta(days=1),
                  not_after=not_after or NOW + dt.timedelta(days=days))
    return Ca(cert, key)


def intermediate(cn: str, issuer: Ca, *, key=None, days: int = 1000,
                 not_after: dt.datetime | None = None) -> Ca:
    key = key or ec_key()
    end = not_after or NOW + dt.timedelta(days=days)
    cert = _build(_name(cn), issuer.name, key.public_key(), issuer.key, ca=True,
                  not_before=min(NOW - dt.timedelta(days=1), end - dt.timedelta(days=days)),
                  not_after=end)
    return Ca(cert, key)


def cross_sign(subject: Ca, issuer: Ca, *, days: int = 1000) -> Ca:
    """`subject`'s name and key, signed by `issuer` (like Root YR signed by ISRG Root X1)."""
    cert = _build(subject.name, issuer.name, subject.key.public_key(), issuer.key, ca=True,
                  not_before=NOW - dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=days))
    return Ca(cert, subject.key)


def leaf(domains: list[str], issuer: Ca, *, key=None, days: int = 90,
         not_after: dt.datetime | None = None) -> Ca:
    key = key or rsa_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
    end = not_after or NOW + dt.timedelta(days=days)
    cert = _build(subject, issuer.name, key.public_key(), issuer.key, ca=False,
                  not_before=min(NOW - dt.timedelta(hours=1), end - dt.timedelta(days=days)),
                  not_after=end, sans=domains)
    return Ca(cert, key)


def pem_of(*cas: Ca) -> str:
    return "".join(c.pem for c in cas)


def key_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()
