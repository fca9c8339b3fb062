"""The test CA factory every test folder shares, built with `cryptography` only.

Two ways in, one certificate builder underneath:
- primitives (`root`, `intermediate`, `cross_sign`, `leaf` -> `Ca`) for tests that shape a
  hierarchy themselves (trust chains, cross-signed roots, rollover);
- `MiniCA`, a root and one intermediate whose `issue` returns a `Leaf` with its chain and key PEM,
  for tests that only need a servable certificate (OCPP listeners, benchmarks), and
  `store_current`, which puts such a leaf into the store the way the issuance flow does
  (`store_issued` does the same for a primitive leaf with its chain and alternate chains).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certd.store.db import session_scope
from certd.store.models import IssuedCertificate, ManagedCertificate
from certd.store.types import utcnow

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


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


def new_key(key_type: str) -> PrivateKey:
    """A key of its own ("ec" or "rsa"): a leaf that must not share its key with another one."""
    return ec_key() if key_type == "ec" else rsa_key(fresh=True)


@dataclass
class Ca:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def name(self) -> x509.Name:
        return self.cert.subject


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certd tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _build(subject: x509.Name, issuer_name: x509.Name, public_key, signing_key, *, ca: bool,  # type: ignore[no-untyped-def]
           not_before: dt.datetime, not_after: dt.datetime, sans: list[str] | None = None,
           path_len: int | None = None) -> x509.Certificate:
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


def root(cn: str, *, key: PrivateKey | None = None, days: int = 3650,
         not_after: dt.datetime | None = None) -> Ca:
    key = key or ec_key()
    cert = _build(_name(cn), _name(cn), key.public_key(), key, ca=True,
                  not_before=NOW - dt.timedelta(days=1),
                  not_after=not_after or NOW + dt.timedelta(days=days))
    return Ca(cert, key)


def intermediate(cn: str, issuer: Ca, *, key: PrivateKey | None = None, days: int = 1000,
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


def leaf(domains: list[str], issuer: Ca, *, key: PrivateKey | None = None, days: float = 90,
         not_after: dt.datetime | None = None, not_before: dt.datetime | None = None) -> Ca:
    """Valid `days` long: from `not_before` when given, else ending at `not_after` (or NOW + days)."""
    key = key or rsa_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
    if not_before is not None:
        start, end = not_before, not_after or not_before + dt.timedelta(days=days)
    else:
        end = not_after or NOW + dt.timedelta(days=days)
        start = min(NOW - dt.timedelta(hours=1), end - dt.timedelta(days=days))
    cert = _build(subject, issuer.name, key.public_key(), issuer.key, ca=False,
                  not_before=start, not_after=end, sans=domains)
    return Ca(cert, key)


def pem_of(*cas: Ca) -> str:
    return "".join(c.pem for c in cas)


def key_pem(key: PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@dataclass
class Leaf:
    """A served certificate as the store keeps it: PEM leaf, PEM chain (the intermediate), PEM key."""
    cert_pem: str
    chain_pem: str
    key_pem: str
    serial: str
    key_type: str
    cert: x509.Certificate


class MiniCA:
    """A root and one intermediate; every `issue` gets a key of its own, valid from an hour ago."""

    def __init__(self, name: str = "certd test") -> None:
        self.root_ca = root(f"{name} root")
        self.intermediate_ca = intermediate(f"{name} intermediate", self.root_ca, days=1800)

    @property
    def root(self) -> x509.Certificate:
        return self.root_ca.cert

    @property
    def intermediate(self) -> x509.Certificate:
        return self.intermediate_ca.cert

    @property
    def root_pem(self) -> str:
        return self.root_ca.pem

    @property
    def intermediate_pem(self) -> str:
        return self.intermediate_ca.pem

    def issue(self, names: list[str], key_type: str = "rsa", *, days: float = 60,
              not_before: dt.datetime | None = None, key: PrivateKey | None = None) -> Leaf:
        issued = leaf(names, self.intermediate_ca, key=key or new_key(key_type), days=days,
                      not_before=not_before or utcnow() - dt.timedelta(hours=1))
        return Leaf(issued.pem, self.intermediate_pem, key_pem(issued.key),
                    f"{issued.cert.serial_number:x}", key_type, issued.cert)


def store_current(engine: sa.Engine, name: str, issued: Leaf, *, chain_pem: str | None = None,
                  key_pem: str | None = None) -> int:
    """Insert `issued` as a new issued certificate and make it current for `name`; returns its id."""
    row = IssuedCertificate(
        name=name,
        domains=",".join(n.value for n in issued.cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value),
        key_type="ec-p256" if issued.key_type == "ec" else "rsa2048",
        serial=issued.serial,
        not_before=issued.cert.not_valid_before_utc, not_after=issued.cert.not_valid_after_utc,
        issuer=issued.cert.issuer.rfc4514_string(),
        cert_pem=issued.cert_pem,
        chain_pem=issued.chain_pem if chain_pem is None else chain_pem,
        key_pem=key_pem or issued.key_pem,
        chain_fingerprints=json.dumps([]),
        directory_url="test-ca",
    )
    stored = _make_current(engine, row)
    assert stored.id is not None
    return stored.id


def store_issued(engine: sa.Engine, name: str, domains: list[str], leaf: Ca, chain: list[Ca], *,
                 alternates: list[list[Ca]] | None = None,
                 issued_at: dt.datetime | None = None) -> IssuedCertificate:
    """Store an issuance row as the issuance flow would (cert, chain, alternate full chains), current for `name`."""
    row = IssuedCertificate(
        name=name, domains=",".join(domains), key_type="rsa2048",
        serial=f"{leaf.cert.serial_number:x}", not_before=leaf.cert.not_valid_before_utc,
        not_after=leaf.cert.not_valid_after_utc, issuer="test", cert_pem=leaf.pem,
        chain_pem=pem_of(*chain), key_pem=key_pem(leaf.key), chain_fingerprints="[]",
        alternate_chains=json.dumps([leaf.pem + pem_of(*alt) for alt in alternates or []]),
        directory_url="https://acme.test/directory",
    )
    if issued_at is not None:
        row.issued_at = issued_at
    return _make_current(engine, row)


def _make_current(engine: sa.Engine, row: IssuedCertificate) -> IssuedCertificate:
    with session_scope(engine) as session:
        session.add(row)
        session.flush()
        managed = session.get(ManagedCertificate, row.name) or ManagedCertificate(name=row.name)
        managed.current_id = row.id
        session.add(managed)
    return row
