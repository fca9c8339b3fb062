"""Fixtures for trust tests: a config with bundles, a store, and issued rows made from test CAs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from certd.config import Config, parse_config
from certd.store.db import make_engine, session_scope, upgrade
from certd.store.models import IssuedCertificate, ManagedCertificate
from tests import pki


def toml_str(value: object) -> str:
    return json.dumps(str(value))


@dataclass
class TrustWorld:
    tmp: Path
    anchors_dir: Path
    db_url: str
    engine: sa.Engine
    config_text: str = ""

    def config(self, trust: str, certificates: str | None = None, extra: str = "") -> Config:
        certificates = certificates if certificates is not None else (
            '[[certificates]]\nname = "ocpp"\ndomains = ["ocpp.example.com"]\n'
            '[[certificates]]\nname = "web"\ndomains = ["web.example.com", "alt.example.com"]\n'
        )
        self.config_text = (f"state_dir = {toml_str(self.tmp / 'state')}\n"
                            f"database_url = {toml_str(self.db_url)}\n{extra}\n"
                            f"{certificates}\n{trust}\n")
        (self.tmp / "certd.toml").write_text(self.config_text)
        return parse_config(self.config_text, str(self.tmp / "certd.toml"))

    def trust_anchor(self, *roots: pki.Ca) -> None:
        for root in roots:
            (self.anchors_dir / f"{root.cert.serial_number:x}.pem").write_text(root.pem)

    def issue(self, name: str, domains: list[str], leaf: pki.Ca, chain: list[pki.Ca],
              alternates: list[list[pki.Ca]] | None = None,
              issued_at: dt.datetime | None = None) -> IssuedCertificate:
        """Store an issuance row as the issuance flow would (cert, chain, alternate full chains)."""
        with session_scope(self.engine) as session:
            row = IssuedCertificate(
                name=name, domains=",".join(domains), key_type="rsa2048",
                serial=f"{leaf.cert.serial_number:x}", not_before=leaf.cert.not_valid_before_utc,
                not_after=leaf.cert.not_valid_after_utc, issuer="test", cert_pem=leaf.pem,
                chain_pem=pki.pem_of(*chain), key_pem=pki.key_pem(leaf.key), chain_fingerprints="[]",
                alternate_chains=json.dumps([leaf.pem + pki.pem_of(*alt) for alt in alternates or []]),
                directory_url="https://acme.test/directory", issued_at=issued_at or pki.NOW,
            )
            session.add(row)
            session.flush()
            managed = session.get(ManagedCertificate, name) or ManagedCertificate(name=name)
            managed.current_id = row.id
            session.add(managed)
        return row


@pytest.fixture
def make_world(tmp_path: Path) -> Callable[[str], TrustWorld]:
    def build(db_url: str) -> TrustWorld:
        anchors = tmp_path / "anchors"
        anchors.mkdir(exist_ok=True)
        upgrade(db_url)
        return TrustWorld(tmp_path, anchors, db_url, make_engine(db_url))
    return build


@pytest.fixture
def world(make_world, tmp_path: Path) -> TrustWorld:
    """SQLite-backed world (most tests); `db_world` runs on SQLite and PostgreSQL."""
    return make_world(f"sqlite:///{tmp_path / 'certd.db'}")


@pytest.fixture
def db_world(make_world, db_url: str) -> TrustWorld:
    return make_world(db_url)


def bundle_toml(anchors_dir: Path, *, name: str = "fleet", certificates: list[str] | None = None,
                extra: str = "", registries: str = "") -> str:
    certs = "" if certificates is None else "certificates = [" + ", ".join(f'"{c}"' for c in certificates) + "]\n"
    return (f"[trust.anchor_sets]\nlab = {toml_str(anchors_dir)}\n\n"
            f"[[trust.bundles]]\nname = \"{name}\"\nanchors = \"lab\"\n{certs}{extra}\n{registries}")
