"""Gray-cloud fixtures: the sandbox Cloudflare (emulator + DNS server) and a real store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest
import sqlalchemy as sa

from certd.config import Config, parse_config
from certd.dns.addresses import InterfaceSnapshot
from certd.dns.cloudflare import CloudflareDNS
from certd.dns.sync import SyncReport, sync_hosts
from certd.sandbox import SandboxWorld
from certd.store.db import make_engine, session_scope, upgrade
from certd.store.hosts import ManagedDnsRecord, all_rows

ZONE = "example.com"


@dataclass
class GrayWorld:
    world: SandboxWorld
    engine: sa.Engine
    db_url: str

    def adapter(self, token: str | None = None, **options: Any) -> CloudflareDNS:
        return CloudflareDNS(token or self.world.token, base_url=self.world.base_url, **options)

    def config(self, hosts_toml: str, extra: str = "") -> Config:
        return parse_config(f'[cloudflare]\nbase_url = "{self.world.base_url}"\n{extra}\n{hosts_toml}')

    def run(self, config: Config, *, apply: bool = True, adapter: CloudflareDNS | None = None,
            snapshot: InterfaceSnapshot | None = None) -> SyncReport:
        return sync_hosts(config, self.engine, adapter or self.adapter(), apply=apply, snapshot=snapshot)

    def records(self, name: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.world.emulator.records(ZONE) if name is None or r["name"] == name]

    def rows(self) -> list[ManagedDnsRecord]:
        with session_scope(self.engine) as session:
            return all_rows(session)

    def writes(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.world.emulator.writes()]

    def answer(self, name: str, rtype: str = "A") -> list[str] | str:
        """What the sandbox's authoritative DNS server answers (dnspython over UDP)."""
        host, port = self.world.dns_addr.rsplit(":", 1)
        response = dns.query.udp(dns.message.make_query(name, rtype), host, port=int(port), timeout=3)
        if response.rcode() != dns.rcode.NOERROR:
            return dns.rcode.to_text(response.rcode())
        return sorted(item.to_text() for rrset in response.answer for item in rrset)


@pytest.fixture
def gray(cf_world: SandboxWorld, db_url: str) -> Iterator[GrayWorld]:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        yield GrayWorld(cf_world, engine, db_url)
    finally:
        engine.dispose()


WALLBOX = """
[[hosts]]
name = "local.example.com"
address = "192.168.1.100"
"""
