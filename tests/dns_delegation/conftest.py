"""A sandbox world where some names' DNS is not editable: zones at a "registrar" (served by the
sandbox DNS server, no token for them) and scoped tokens for the Cloudflare zones.

`Deleg.write(certificates, cloudflare=...)` writes a certd config whose `[cloudflare]`
section is given by the test; `Deleg.cli(...)` runs certd with the tokens in `env`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from certd.config import Config, parse_config
from certd.sandbox import PebbleServer, SandboxWorld
from certd.sandbox.certd_config import toml_str
from certd.store.db import make_engine, upgrade

REGISTRAR_ZONES = ("example.org", "example.info")  # DNS served, no Cloudflare token has them


@dataclass
class Deleg:
    world: SandboxWorld
    pebble: PebbleServer
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    config_path: Path | None = None
    engines: list[sa.Engine] = field(default_factory=list)

    def token(self, value: str, zones: list[str] | str = "all", permissions: set[str] | None = None) -> str:
        kwargs = {"permissions": permissions} if permissions is not None else {}
        self.world.emulator.add_token(value, zones=zones, **kwargs)  # type: ignore[arg-type]
        return value

    def secret_file(self, name: str, value: str) -> Path:
        path = self.tmp / name
        path.write_text(value + "\n")
        path.chmod(0o600)
        return path

    def cname(self, name: str, target: str) -> None:
        zone = self.world.store.zone_for(name)
        assert zone is not None, name
        self.world.emulator.add_record(zone.name, "CNAME", name, target)

    def write(self, certificates: str, *, cloudflare: str, extra: str = "") -> Config:
        text = f"""\
state_dir = {toml_str(self.tmp / "state")}
{extra}
[acme]
directory = {toml_str(self.pebble.directory_url)}
ca_bundle = {toml_str(self.pebble.https_ca_path)}
email = "admin@example.com"

[cloudflare]
base_url = {toml_str(self.world.emulator.base_url)}
max_retries = 0
{cloudflare}

[dns]
nameservers = [{toml_str(self.world.dns_addr)}]
propagation_timeout = 20

{certificates}
"""
        self.config_path = self.tmp / "certd.toml"
        self.config_path.write_text(text)
        config = parse_config(text, str(self.config_path))
        upgrade(config.db_url)
        return config

    def engine(self, config: Config) -> sa.Engine:
        engine = make_engine(config.db_url)
        self.engines.append(engine)
        return engine

    def cli(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        assert self.config_path is not None
        return subprocess.run([sys.executable, "-m", "certd", "--config", str(self.config_path), *args],
                              env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        assert self.config_path is not None
        return subprocess.Popen([sys.executable, "-m", "certd", "--config", str(self.config_path), *args],
                                env={**os.environ, **self.env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def txt(self, zone: str | None = None) -> list[dict]:  # type: ignore[type-arg]
        return [r for r in self.world.emulator.records(zone) if r["type"] == "TXT"]

    def orders_placed(self) -> int:
        """New orders Pebble received (its log names each POST to the newOrder endpoint)."""
        return self.pebble.log_path.read_text(errors="replace").count("POST /order-plz")

    def zone_id(self, name: str) -> str:
        zone = self.world.store.zone_by_name(name)
        assert zone is not None
        return zone.id


@pytest.fixture
def deleg(cf_world: SandboxWorld, pebble: PebbleServer, tmp_path: Path) -> Iterator[Deleg]:
    for zone in REGISTRAR_ZONES:
        cf_world.store.add_zone(zone)
    setup = Deleg(cf_world, pebble, tmp_path)
    yield setup
    for engine in setup.engines:
        engine.dispose()


def cert(name: str, domains: list[str], tmp: Path, extra: str = "") -> str:
    lines = ["[[certificates]]", f"name = {toml_str(name)}",
             "domains = [" + ", ".join(toml_str(d) for d in domains) + "]", "key_type = \"ec-p256\""]
    if extra:
        lines.append(extra)
    lines += ["[[certificates.targets]]", f"fullchain = {toml_str(tmp / (name + '-fullchain.pem'))}",
              f"privkey = {toml_str(tmp / (name + '-privkey.pem'))}"]
    return "\n".join(lines) + "\n"
