"""A store full of life for the status page's browser tests, its benchmark and its screenshot.

`fleet_config_toml` writes a config with N certificates, one gated OCPP listener
and a fleet bundle; `populate` fills a store the way months of `certd run`
would: real certificates from a small local CA (some near expiry, some with
failing renewals), issuance attempts, gray-cloud records, bundle versions,
registry deliveries, thousands of chargers with rollover progress, and a lease
held. Deterministic for a given seed, apart from key material and the clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certd.sandbox.certd_config import toml_str

LISTENER = "fleet"
LISTENER_HOST = "ocpp.example.com"
LISTENER_CERT = "ocpp"
BUNDLE = "fleet"
REGISTRY = "fleet-registry"
NODE = "status-fleet"  # this process's [ocpp] node_name
OTHER_NODE = "certd-b"  # chargers shown connected are held by another certd node sharing the store
VENDORS = [("ABB", "Terra AC"), ("Alfen", "Eve Single"), ("Wallbox", "Pulsar Plus"), ("KEBA", "P30 x-series"),
           ("Zaptec", "Go"), ("Easee", "Charge"), ("Mennekes", "Amtron 4Business"), ("Quectel-GSM", "EC200U kit")]
DAY = dt.timedelta(days=1)


def charger_id(index: int) -> str:
    return f"CP-{index:05d}"


def charger_enabled(index: int) -> bool:
    """About 1 % of the chargers are disabled (they are refused at login)."""
    return index % 97 != 5


def certificate_names(count: int) -> list[str]:
    """The listener's certificate first, then site-01, site-02, ..."""
    return [LISTENER_CERT] + [f"site-{index:02d}" for index in range(1, count)]


def fleet_config_toml(state_dir: Path, roots_file: Path, *, certificates: int = 50, db_url: str | None = None,
                      http: str = 'listen = ["127.0.0.1:0"]', ocpp_port: int = 0,
                      listener_host: str = LISTENER_HOST) -> str:
    lines = [f"state_dir = {toml_str(state_dir)}"]
    if db_url:
        lines.append(f"database_url = {toml_str(db_url)}")
    lines += ["", "[http]", http, "", "[ocpp]", 'unknown_chargers = "accept"', "reload_check_interval = 0",
              f"node_name = {toml_str(NODE)}", f"trust_roots = [{toml_str(roots_file)}]", "",
              "[[ocpp.listeners]]", f'name = "{LISTENER}"', f'host = "{listener_host}"', 'bind = ["127.0.0.1"]',
              f"port = {ocpp_port}", f'certificates = ["{LISTENER_CERT}"]', 'paths = ["/ocpp/{id}"]', "",
              "[trust.anchor_sets]", f"local = {toml_str(roots_file)}", "", "[[trust.bundles]]",
              f'name = "{BUNDLE}"', 'anchors = "local"', f'certificates = ["{LISTENER_CERT}"]', ""]
    for index, name in enumerate(certificate_names(certificates)):
        domain = listener_host if name == LISTENER_CERT else f"{name}.example.com"
        key_type = "rsa2048" if index % 5 == 0 else "ec-p256"
        lines += ["[[certificates]]", f'name = "{name}"', f'domains = ["{domain}"]', f'key_type = "{key_type}"', ""]
    return "\n".join(lines)


@dataclass
class LocalCa:
    """Root -> intermediate, plus an older root about to expire (it shows on the timeline)."""

    root: x509.Certificate
    old_root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey

    @property
    def roots_pem(self) -> str:
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in (self.root, self.old_root))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str, key, issuer: x509.Name, issuer_key, start: dt.datetime, end: dt.datetime) -> x509.Certificate:  # type: ignore[no-untyped-def]
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def local_ca(now: dt.datetime) -> LocalCa:
    root_key, old_key, inter_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _ca("Status Fleet Root R2", root_key, _name("Status Fleet Root R2"), root_key, now - 400 * DAY, now + 3000 * DAY)
    old = _ca("Status Fleet Root R1", old_key, _name("Status Fleet Root R1"), old_key, now - 3500 * DAY, now + 150 * DAY)
    inter = _ca("Status Fleet CA E1", inter_key, root.subject, root_key, now - 300 * DAY, now + 800 * DAY)
    return LocalCa(root, old, inter, inter_key)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _leaf(ca: LocalCa, domain: str, key_type: str, start: dt.datetime, end: dt.datetime) -> tuple[x509.Certificate, str]:
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if key_type.startswith("rsa")
           else ec.generate_private_key(ec.SECP256R1()))
    cert = (x509.CertificateBuilder().subject_name(_name(domain)).issuer_name(ca.intermediate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .sign(ca.intermediate_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert, key_pem


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def populate(engine: sa.Engine, config, *, chargers: int, now: dt.datetime, seed: int = 7,  # type: ignore[no-untyped-def]
             connected_share: float = 0.8) -> LocalCa:
    """Fill an empty, upgraded store for `config` (made by fleet_config_toml)."""
    rnd = random.Random(seed)
    ca = local_ca(now)
    with engine.begin() as conn:
        listener_issued = _certificates(conn, config, ca, now, rnd)
        _trust(conn, ca, now)
        _chargers(conn, chargers, now, rnd, connected_share,
                  held=[_fingerprint(ca.root), _fingerprint(ca.old_root)], listener_issued=listener_issued)
        _dns_and_leases(conn, now)
    return ca


def _table(model):  # type: ignore[no-untyped-def]
    return model.__table__


def _certificates(conn, config, ca: LocalCa, now: dt.datetime, rnd: random.Random) -> int | None:  # type: ignore[no-untyped-def]
    """Issued certificates and their history; returns the listener certificate's issued id."""
    from certd.store.models import IssuanceAttempt, IssuedCertificate, ManagedCertificate

    count = len(config.certificates)
    listener_issued = None
    for index, cert_cfg in enumerate(config.certificates):
        lifetime = 90 * DAY
        age = {1: 86.5 * DAY, 2: 70 * DAY}.get(index, (index * 53 % 80 + rnd.random()) * DAY)
        start = now - age
        leaf, key_pem = _leaf(ca, cert_cfg.domains[0], cert_cfg.key_type, start, start + lifetime)
        issued_id = conn.execute(sa.insert(_table(IssuedCertificate)).values(
            name=cert_cfg.name, domains=",".join(cert_cfg.domains), key_type=cert_cfg.key_type,
            serial=f"{leaf.serial_number:x}", not_before=start, not_after=start + lifetime,
            issuer="Status Fleet CA E1", cert_pem=_pem(leaf), chain_pem=_pem(ca.intermediate), key_pem=key_pem,
            chain_fingerprints=json.dumps([_fingerprint(ca.intermediate)]), alternate_chains="[]",
            directory_url="https://acme.example.test/directory", issued_at=start)).inserted_primary_key[0]
        if cert_cfg.name == LISTENER_CERT:
            listener_issued = issued_id
        failing = index in (1, 2)
        conn.execute(sa.insert(_table(IssuanceAttempt)).values(
            name=cert_cfg.name, started_at=start - dt.timedelta(minutes=1), finished_at=start,
            outcome="success", certificate_id=issued_id))
        if failing:
            for attempt in range(2):
                at = now - dt.timedelta(hours=6 - attempt * 3)
                conn.execute(sa.insert(_table(IssuanceAttempt)).values(
                    name=cert_cfg.name, started_at=at, finished_at=at + dt.timedelta(seconds=40),
                    outcome="failure", error="Cloudflare failed to create TXT _acme-challenge: HTTP 500"))
        conn.execute(sa.insert(_table(ManagedCertificate)).values(
            name=cert_cfg.name, current_id=issued_id, deployed_id=issued_id, hooks_pending=False,
            failure_count=2 if failing else 0,
            last_error="Cloudflare failed to create TXT _acme-challenge: HTTP 500" if failing else None,
            next_attempt_at=now + dt.timedelta(hours=1) if failing else None,
            next_check_at=now + dt.timedelta(minutes=10 + index % count),
            renew_reason="backstop: two thirds of the lifetime", renew_at=start + lifetime * 2 / 3,
            updated_at=now))
    return listener_issued


def _trust(conn, ca: LocalCa, now: dt.datetime) -> None:  # type: ignore[no-untyped-def]
    from certd.store.trust import TrustBundleVersion, TrustCaCertificate, TrustDelivery

    members = []
    for cert, role in ((ca.root, "root"), (ca.old_root, "root"), (ca.intermediate, "intermediate")):
        fingerprint = _fingerprint(cert)
        conn.execute(sa.insert(_table(TrustCaCertificate)).values(
            fingerprint=fingerprint, subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
            spki_sha256=hashlib.sha256(cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest(),
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            self_signed=role == "root", pem=_pem(cert), first_seen_at=now - 300 * DAY))
        members.append((cert, role, fingerprint))
    for flavour, chosen in (("roots", members[:2]), ("full", members)):
        for seq in (1, 2):
            entries = chosen if seq == 2 else chosen[1:]
            pem = "".join(_pem(c) for c, _, _ in entries)
            sha = hashlib.sha256(pem.encode()).hexdigest()
            created = now - (40 * DAY if seq == 1 else 3 * DAY)
            manifest = {"bundle": BUNDLE, "flavour": flavour, "version": seq, "sha256": sha,
                        "created_at": created.isoformat(), "server_names": [LISTENER_HOST],
                        "certificates": [{"fingerprint": f, "subject": c.subject.rfc4514_string(),
                                          "issuer": c.issuer.rfc4514_string(),
                                          "not_after": c.not_valid_after_utc.isoformat(), "role": r,
                                          "server_names": [LISTENER_HOST]} for c, r, f in entries],
                        "notes": []}
            version_id = conn.execute(sa.insert(_table(TrustBundleVersion)).values(
                bundle=BUNDLE, flavour=flavour, seq=seq, sha256=sha, previous_seq=seq - 1 or None, pem=pem,
                manifest_json=json.dumps(manifest), diff_json="{}", notes_json="[]",
                reason="first issuance" if seq == 1 else "new root Status Fleet Root R2 in the chain",
                created_at=created)).inserted_primary_key[0]
            delivered = seq == 1 or flavour == "roots"
            conn.execute(sa.insert(_table(TrustDelivery)).values(
                registry_name=REGISTRY, version_id=version_id, idempotency_key=f"{BUNDLE}-{flavour}-{seq}",
                body="{}", state="delivered" if delivered else "pending", attempts=1 if delivered else 4,
                next_attempt_at=now + dt.timedelta(minutes=5), last_status=200 if delivered else 503,
                created_at=created, delivered_at=created + dt.timedelta(seconds=2) if delivered else None))


def _chargers(conn, count: int, now: dt.datetime, rnd: random.Random, connected_share: float,  # type: ignore[no-untyped-def]
              held: list[str], listener_issued: int | None) -> None:
    """Chargers; those confirmed hold the newest `roots` bundle version (the roots in `held`)."""
    from certd.store.chargers import Charger, ChargerAuditEvent
    from certd.store.rollover import RolloverCharger, RolloverGate

    rows, rollover = [], []
    for index in range(count):
        vendor, model = VENDORS[index % len(VENDORS)]
        connected = rnd.random() < connected_share
        cid = charger_id(index)
        rows.append({"charger_id": cid, "enabled": charger_enabled(index),
                     "registration": "pending" if index % 211 == 3 else "accepted", "password_hash": None,
                     "heartbeat_class": "gsm" if vendor.endswith("GSM") else "default",
                     "ocpp_version": ["ocpp1.6", "ocpp2.0.1", "ocpp1.6", "ocpp2.1"][index % 4],
                     "vendor": vendor, "model": model, "firmware_version": f"{1 + index % 3}.{index % 7}.{index % 5}",
                     "serial_number": f"SN{index * 7919 % 1000003:07d}",
                     "first_seen": now - 200 * DAY, "last_seen": now - dt.timedelta(seconds=index % 300),
                     "connected_node": OTHER_NODE if connected else None,
                     "connected_since": now - dt.timedelta(hours=index % 48) if connected else None,
                     "last_address": None, "created_at": now - 200 * DAY, "updated_at": now})
        draw = rnd.random()
        if draw < 0.95:
            state = "confirmed" if draw < 0.72 else "pending" if draw < 0.9 else "failed"
            rollover.append({"charger_id": cid, "listener": LISTENER, "ocpp_version": rows[-1]["ocpp_version"],
                             "held_json": json.dumps(held if state == "confirmed" else held[1:]),
                             "bundles_json": json.dumps({BUNDLE: 2} if state == "confirmed" else {BUNDLE: 1}),
                             "state": state,
                             "last_result": {"confirmed": "Accepted", "failed": "Rejected"}.get(state),
                             "confirmed_at": now - DAY if state == "confirmed" else None,
                             "failures": 1 if state == "failed" else 0, "updated_at": now})
    if rows:
        conn.execute(sa.insert(_table(Charger)), rows)
    if rollover:
        conn.execute(sa.insert(_table(RolloverCharger)), rollover)
    conn.execute(sa.insert(_table(RolloverGate)).values(
        listener=LISTENER, cert_name=LISTENER_CERT, bundle=BUNDLE, state="pending", required_json="[]", lacking_json="[]",
        pending_id=listener_issued, decided_id=listener_issued,
        reason="waiting for chargers to hold Status Fleet Root R2", gate_share=0.9, deadline_days=7.0,
        started_at=now - 2 * DAY, deadline_at=now + 5 * DAY, updated_at=now))
    for index in range(min(count, 12)):
        conn.execute(sa.insert(_table(ChargerAuditEvent)).values(
            at=now - dt.timedelta(minutes=7 * index), charger_id=charger_id(index * 37 % max(count, 1)),
            address="127.0.0.1", kind="auth_failed", detail="wrong password"))


def _dns_and_leases(conn, now: dt.datetime) -> None:  # type: ignore[no-untyped-def]
    from certd.store.hosts import ManagedDnsRecord
    from certd.store.leases import Lease

    for name, rtype, content, state in (("home.example.com", "A", "192.168.1.20", "present"),
                                        ("home.example.com", "AAAA", "fd00::20", "present"),
                                        ("nas.example.com", "A", "192.168.1.30", "creating")):
        conn.execute(sa.insert(_table(ManagedDnsRecord)).values(
            name=name, type=rtype, zone_id="zone-example", zone_name="example.com", content=content, ttl=300,
            state=state, last_action="created" if state == "present" else None, created_at=now - 30 * DAY,
            last_checked_at=now - dt.timedelta(minutes=3)))
    conn.execute(sa.insert(_table(Lease)).values(
        name="certificate:site-03", holder="status-host pid 4242", purpose="certd run", token="0" * 32,
        node=None, pid=None, acquired_at=now - dt.timedelta(seconds=20), expires_at=now + dt.timedelta(hours=1)))
