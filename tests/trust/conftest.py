"""Fixtures for trust tests: a config with bundles, a store, and issued rows made from test CAs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from certd.config import Config, parse_config
from certd.sandbox.certd_config import toml_str
from certd.store.db import make_engine, upgrade
from certd.store.models import IssuedCertificate
from tests import pki


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
        return pki.store_issued(self.engine, name, domains, leaf, chain, alternates=alternates,
                                issued_at=issued_at or pki.NOW)


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
