"""The charger CA in the store: create or import it once, load it for signing, list what is trusted.

Synchronous (SQLAlchemy, files): callers on the event loop run these in a worker thread.

- `ensure_ca`: at the first start with `[ocpp.charger_ca]`, import the configured CA files
  or generate a one-level CA (`key_type`, `common_name`, `organization`,
  `ca_validity_days`); under a store lease, so two processes starting together make one.
- `create_ca` (`certd charger-ca init`): a one-level CA, or a two-level one whose root
  key is written once to a file for offline keeping and never stored; `replace=True`
  retires the active issuing CA (still trusted: chargers it served get renewed).
- `import_ca` (`certd charger-ca import`): an issuing CA certificate + key, with its chain
  up to an offline root.
- `load_issuing`: the active issuing CA with its key decrypted or read, for signing.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from sqlmodel import select

from certd.chargerca import authority, keystore
from certd.config import Config
from certd.config.charger_ca import ChargerCaConfig
from certd.errors import CertdError
from certd.store import leases
from certd.store.charger_ca import CA_ACTIVE, CA_RETIRED, ChargerCaCert
from certd.store.crypto import Keyring
from certd.store.db import session_scope

LEASE = "charger-ca-init"
ROLE_ISSUING = "issuing"
ROLE_ROOT = "root"
ROLE_INTERMEDIATE = "intermediate"


@dataclass(frozen=True)
class CaRow:
    """A detached view of one CA certificate row (no key material)."""

    fingerprint: str
    role: str
    state: str
    subject: str
    not_after: dt.datetime
    key_storage: str
    parent_fingerprint: str | None
    cert_pem: str


def _settings(config: Config) -> ChargerCaConfig:
    settings = config.ocpp.charger_ca
    if settings is None:
        raise CertdError("no [ocpp.charger_ca] section in the config: certd is not the chargers' CA")
    return settings


def _view(row: ChargerCaCert) -> CaRow:
    return CaRow(row.fingerprint, row.role, row.state, row.subject, row.not_after, row.key_storage,
                 row.parent_fingerprint, row.cert_pem)


def ca_rows(engine: sa.Engine) -> list[CaRow]:
    with session_scope(engine) as session:
        rows = session.exec(select(ChargerCaCert).order_by(ChargerCaCert.id)).all()
        return [_view(row) for row in rows]


_CA = ChargerCaCert.__table__  # type: ignore[attr-defined]
_ACTIVE_ISSUING = (sa.select(*[_CA.c[name] for name in CaRow.__dataclass_fields__])
                   .where(_CA.c.role == ROLE_ISSUING, _CA.c.state == CA_ACTIVE).order_by(_CA.c.id.desc()).limit(1))


def active_issuing(engine: sa.Engine) -> CaRow | None:
    """The CA that signs now (a Core read: the OCPP service asks at every look)."""
    with engine.connect() as conn:
        row = conn.execute(_ACTIVE_ISSUING).first()
    return CaRow(*row) if row else None


def trusted_certificates(engine: sa.Engine, now: dt.datetime) -> list[x509.Certificate]:
    """Every unexpired CA certificate of the hierarchy (active and retired): client trust."""
    certs = [x509.load_pem_x509_certificate(row.cert_pem.encode()) for row in ca_rows(engine)]
    return [cert for cert in certs if cert.not_valid_after_utc > now]


def _store_keys(engine: sa.Engine) -> Keyring | None:
    """The store key(s) `engine` was made with ([store] key_file / key_env)."""
    from certd.store.sealing import policy_of

    return policy_of(engine).keyring


def _store_key(engine: sa.Engine, settings: ChargerCaConfig, state_dir: str, key: PrivateKeyTypes,
               row: ChargerCaCert) -> None:
    pem = keystore.key_pem(key)
    if settings.key_storage == "store":
        row.key_storage = "store"
        row.key_sealed = keystore.seal_ca_key(pem, row.fingerprint, settings, _store_keys(engine))
        return
    path = keystore.key_path(settings, state_dir, row.fingerprint)
    keystore.write_key_file(path, pem)
    row.key_storage, row.key_path = "file", str(path)


def _insert(engine: sa.Engine, config: Config, issuing: x509.Certificate, key: PrivateKeyTypes,
            chain: list[x509.Certificate], replace: bool) -> CaRow:
    settings = _settings(config)
    with session_scope(engine) as session:
        active = session.exec(select(ChargerCaCert).where(
            ChargerCaCert.role == ROLE_ISSUING, ChargerCaCert.state == CA_ACTIVE)).all()
        if active and not replace:
            raise CertdError("the charger CA exists already (give --replace to replace it: the "
                             "chargers it served are then asked for new certificates)")
        for old in active:
            old.state = CA_RETIRED
        parent = None
        for cert in reversed(chain):  # root first, so each row can name its parent
            fp = authority.fingerprint(cert)
            if session.exec(select(ChargerCaCert).where(ChargerCaCert.fingerprint == fp)).first() is None:
                role = ROLE_ROOT if cert.issuer == cert.subject else ROLE_INTERMEDIATE
                session.add(ChargerCaCert(role=role,
                                          state=CA_ACTIVE, fingerprint=fp, parent_fingerprint=parent,
                                          subject=cert.subject.rfc4514_string(), cert_pem=authority.cert_pem(cert),
                                          not_after=cert.not_valid_after_utc, key_storage="offline"))
            parent = fp
        row = ChargerCaCert(role=ROLE_ISSUING, state=CA_ACTIVE, fingerprint=authority.fingerprint(issuing),
                            parent_fingerprint=parent, subject=issuing.subject.rfc4514_string(),
                            cert_pem=authority.cert_pem(issuing), not_after=issuing.not_valid_after_utc,
                            key_storage=settings.key_storage)
        _store_key(engine, settings, config.state_dir, key, row)
        session.add(row)
        session.flush()
        return _view(row)


def create_ca(engine: sa.Engine, config: Config, now: dt.datetime, *, two_level: bool = False,
              root_key_out: Path | None = None, replace: bool = False) -> CaRow:
    """Generate the CA (see the module docstring); the root key of two levels goes to root_key_out."""
    settings = _settings(config)
    key = authority.new_key(settings.key_type)
    if not two_level:
        cert = authority.make_ca(key, settings.common_name, settings.organization, now,
                                 settings.ca_validity_days)
        return _insert(engine, config, cert, key, [], replace)
    if root_key_out is None:
        raise CertdError("a two-level CA needs --root-key-out PATH: the root key is written there "
                         "once, for you to keep offline")
    root_key = authority.new_key(settings.key_type)
    root = authority.make_ca(root_key, f"{settings.common_name} root", settings.organization, now,
                             settings.ca_validity_days * 2, path_length=1)
    issuing = authority.make_ca(key, settings.common_name, settings.organization, now,
                                settings.ca_validity_days, issuer_cert=root, issuer_key=root_key)
    keystore.write_key_file(root_key_out, keystore.key_pem(root_key))
    return _insert(engine, config, issuing, key, [root], replace)


def import_ca(engine: sa.Engine, config: Config, cert_pem: bytes, key_pem: bytes,
              chain_pem: bytes | None, now: dt.datetime, replace: bool = False) -> CaRow:
    """An existing issuing CA (+ its issuers), after checking key, CA flag, chain and dates."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
        chain = x509.load_pem_x509_certificates(chain_pem) if chain_pem else []
    except ValueError:
        raise CertdError("the CA certificate or chain file holds no PEM certificate") from None
    issuing, chain = certs[0], certs[1:] + chain
    key = keystore.load_key(key_pem, "the CA key file")
    from cryptography.hazmat.primitives import serialization as ser

    spki = (ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != issuing.public_key().public_bytes(*spki):
        raise CertdError("the CA key does not belong to the CA certificate")
    try:
        constraints = issuing.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertdError("the certificate is not a CA certificate (basicConstraints CA:TRUE)")
    if issuing.not_valid_after_utc <= now:
        raise CertdError(f"the CA certificate expired on {issuing.not_valid_after_utc:%Y-%m-%d}")
    path = [issuing, *chain]
    for child, parent in zip(path, path[1:]):
        if authority.issued_by(child, [parent]) is None:
            raise CertdError(f"the chain is out of order: {child.subject.rfc4514_string()} is not "
                             f"issued by {parent.subject.rfc4514_string()}")
    return _insert(engine, config, issuing, key, chain, replace)


def ensure_ca(engine: sa.Engine, config: Config, now: dt.datetime, wait: float = 30.0) -> CaRow:
    """The active issuing CA, created from the config the first time (see the module docstring)."""
    settings = _settings(config)
    deadline = time.monotonic() + wait
    while True:
        found = active_issuing(engine)
        if found is not None:
            return found
        try:
            with leases.held(engine, leases.job_lease(LEASE), "charger CA setup"):
                if active_issuing(engine) is not None:
                    continue
                if settings.import_cert_file and settings.import_key_file:
                    key_pem = keystore.read_key_file(settings.import_key_file, "import_key_file")
                    try:
                        cert_pem = Path(settings.import_cert_file).read_bytes()
                        chain = (Path(settings.import_chain_file).read_bytes()
                                 if settings.import_chain_file else None)
                    except OSError as exc:
                        raise CertdError(f"charger CA import: {exc.filename}: {exc.strerror}") from None
                    return import_ca(engine, config, cert_pem, key_pem, chain, now)
                return create_ca(engine, config, now)
        except leases.LeaseBusy:
            if time.monotonic() > deadline:
                raise CertdError("another certd process is setting up the charger CA; try again")
            time.sleep(0.2)


def load_issuing(engine: sa.Engine, config: Config) -> authority.IssuingCa:
    """The active issuing CA with its key, ready to sign (CaKeyError when the key is not readable)."""
    settings = _settings(config)
    with session_scope(engine) as session:
        row = session.exec(select(ChargerCaCert).where(
            ChargerCaCert.role == ROLE_ISSUING, ChargerCaCert.state == CA_ACTIVE
        ).order_by(ChargerCaCert.id.desc())).first()  # type: ignore[union-attr]
        if row is None:
            raise CertdError("no active charger CA in the store (certd charger-ca init)")
        fp, storage, sealed, path, pem = (row.fingerprint, row.key_storage, row.key_sealed,
                                          row.key_path, row.cert_pem)
        by_fp = {r.fingerprint: r for r in session.exec(select(ChargerCaCert)).all()}
        chain: list[x509.Certificate] = []
        parent = row.parent_fingerprint
        while parent is not None and parent in by_fp and len(chain) < 4:
            chain.append(x509.load_pem_x509_certificate(by_fp[parent].cert_pem.encode()))
            parent = by_fp[parent].parent_fingerprint
    if storage == "store":
        if sealed is None:
            raise keystore.CaKeyError("the charger CA key is missing from the store")
        key_pem = keystore.unseal_ca_key(sealed, fp, settings, _store_keys(engine))
    elif storage == "file" and path:
        key_pem = keystore.read_key_file(path)
    else:
        raise keystore.CaKeyError("the active charger CA has no key certd can use")
    key = keystore.load_key(key_pem, "the charger CA key")
    return authority.IssuingCa(x509.load_pem_x509_certificate(pem.encode()), key, tuple(chain))


def delivery_chain(engine: sa.Engine, serial: str) -> str:
    """A stored charger certificate with its CA chain, as CertificateSigned carries it (the
    issuing CA and intermediates; a root above the issuing CA is the trust anchor, left out)."""
    from certd.store.charger_ca import ChargerCertificate

    with session_scope(engine) as session:
        cert = session.exec(select(ChargerCertificate).where(ChargerCertificate.serial == serial)).one()
        by_fp = {row.fingerprint: row for row in session.exec(select(ChargerCaCert)).all()}
        text, fp = cert.cert_pem, cert.ca_fingerprint
        for depth in range(5):
            row = by_fp.get(fp) if fp else None
            if row is None or (depth > 0 and row.role == ROLE_ROOT):
                break
            text += row.cert_pem
            fp = row.parent_fingerprint
        return text
