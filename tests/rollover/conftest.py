"""Fixtures for the trust rollover: a certd config on the sandbox (Pebble + Cloudflare emulator),
an OCPP listener on loopback, the rollover engine, and simulated chargers.

Everything is real: DNS-01 issuance from Pebble, TLS handshakes that the
chargers verify against their own trust stores, OCPP over websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509

from certd.renewal import pipeline

from certd.runtime import eventloop
from certd.config import Config, parse_config
from certd.ocpp import charger_registry
from certd.rollover.alerts import ForcedSwitch
from certd.rollover.engine import RolloverEngine
from certd.ocpp.service import OcppService
from certd.sandbox import PebbleServer, SandboxWorld
from certd.sandbox.certd_config import TOKEN_ENV, ocpp_listener, ocpp_toml, sandbox_config_toml, toml_str
from certd.store.db import make_engine, session_scope, upgrade
from certd.store.models import IssuedCertificate
from certd.store.rollover import RolloverCharger, RolloverGate
from tests.rollover.sim import Behavior, SimCharger
from tests.waits import until  # noqa: F401  (the rollover tests import it from here)

HOST = "ocpp.example.com"
LISTENER = "main"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(coro: Any, limit: float = 90) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(limit):
            return await coro
    return eventloop.run(bounded())  # the loop `certd serve` uses (CERTD_EVENT_LOOP=asyncio: asyncio)


@dataclass
class Fleet:
    world: SandboxWorld
    pebble: PebbleServer
    tmp: Path
    config: Config
    engine: sa.Engine
    port: int
    anchors_dir: Path
    roots_file: Path
    alerts: list[ForcedSwitch] = field(default_factory=list)
    now: list[dt.datetime | None] = field(default_factory=lambda: [None])

    # -- CA side ------------------------------------------------------------------------------
    def trust_pebble_roots(self) -> x509.Certificate:
        """Put Pebble's current root into the bundle's anchor set and [ocpp] trust_roots."""
        root_pem = self.pebble.roots()[0]
        root = x509.load_pem_x509_certificate(root_pem.encode())
        (self.anchors_dir / f"pebble-{root.serial_number:x}.pem").write_text(root_pem)
        self.roots_file.write_text("".join(p.read_text() for p in sorted(self.anchors_dir.iterdir())))
        return root

    def issue(self) -> IssuedCertificate:
        """certd renews (obtain, store, deploy, post-issuance steps: chain tracking, bundles)."""
        return pipeline.issue_and_deploy(self.config, self.engine, "ocpp").issued

    # -- certd side ------------------------------------------------------------------------------
    def clock(self) -> dt.datetime:
        return self.now[0] or dt.datetime.now(dt.timezone.utc)

    @contextlib.asynccontextmanager
    async def certd(self) -> AsyncIterator[tuple[OcppService, RolloverEngine]]:
        """The OCPP service and the rollover engine, wired as the daemon wires them."""
        service = OcppService(self.config, self.engine)
        await service.start()
        self.port = service.listener(LISTENER).ports[0]  # the config may say 0 (any free port)
        rollover = RolloverEngine(self.config, self.engine, service, clock=self.clock,
                                  alert=self.alerts.append)
        await rollover.start()
        try:
            yield service, rollover
        finally:
            await rollover.close()
            await service.close()

    async def renew(self, service: OcppService, rollover: RolloverEngine) -> IssuedCertificate:
        """What the daemon does for a due certificate: issue in a worker thread, reload, tell rollover."""
        issued = await asyncio.to_thread(self.issue)
        await service.reload("ocpp")
        await rollover.on_issued("ocpp")
        return issued

    def served_serial(self, service: OcppService) -> str:
        return service.served(LISTENER)[0].serial

    def gate(self) -> RolloverGate:
        with session_scope(self.engine) as session:
            gate = session.get(RolloverGate, (LISTENER, "ocpp"))
            assert gate is not None
            return gate

    def charger_rows(self) -> dict[str, RolloverCharger]:
        from sqlmodel import select

        with session_scope(self.engine) as session:
            return {r.charger_id: r for r in session.exec(select(RolloverCharger)).all()}

    # -- chargers ------------------------------------------------------------------------------
    def register(self, charger_ids: list[str], heartbeat_class: str = "default") -> None:
        for charger_id in charger_ids:
            charger_registry.insert_charger(self.engine, charger_id, password_hash=None,
                                    heartbeat_class=heartbeat_class)

    def sims(self, count: int, *, prefix: str = "CP", behaviors: dict[int, Behavior] | None = None,
             start: int = 0) -> list[SimCharger]:
        """`count` chargers trusting Pebble's current root, half 1.6 and half 2.0.1."""
        root_pem = self.pebble.roots()[0]
        result = []
        for i in range(start, start + count):
            version = "ocpp1.6" if i % 2 == 0 else "ocpp2.0.1"
            behavior = (behaviors or {}).get(i, Behavior())
            result.append(SimCharger(f"{prefix}{i:03d}", version, [root_pem], HOST, behavior))
        return result

    def url(self, sim: SimCharger) -> str:
        return f"wss://127.0.0.1:{self.port}/ocpp/{sim.charger_id}"


def fleet_toml(anchors: Path, roots_file: Path, port: int, rollover: str = "") -> str:
    ocpp = ocpp_toml([ocpp_listener(LISTENER, HOST, port=port, certificates=["ocpp"])],
                     unknown_chargers="accept",  # registered chargers without a password (profile 2 auth is tested elsewhere)
                     reload_check_interval=0, call_timeout=10, trust_roots=[roots_file])
    return f"""
[trust.anchor_sets]
pebble = {toml_str(anchors)}

[[trust.bundles]]
name = "fleet"
anchors = "pebble"

{ocpp}
[rollover]
boot_wait = 2
check_interval = 1
call_timeout = 5
{rollover}
"""


@pytest.fixture
def make_fleet(cf_world: SandboxWorld, pebble: PebbleServer, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Callable[..., Fleet]:
    monkeypatch.setenv(TOKEN_ENV, cf_world.token)

    def build(rollover: str = "", extra_top: str = "", fixed_port: bool = False) -> Fleet:
        """`fixed_port`: the same port across certd restarts (chargers reconnect to it)."""
        anchors = tmp_path / "anchors"
        anchors.mkdir(exist_ok=True)
        roots_file = tmp_path / "trust-roots.pem"
        port = free_port() if fixed_port else 0
        certs = f'[[certificates]]\nname = "ocpp"\ndomains = ["{HOST}"]\n'
        text = sandbox_config_toml(cf_world, pebble, tmp_path / "state", certs,
                                   extra=fleet_toml(anchors, roots_file, port, rollover))
        text = extra_top + "\n" + text
        path = tmp_path / "certd.toml"
        path.write_text(text)
        config = parse_config(text, str(path))
        upgrade(config.db_url)
        fleet = Fleet(cf_world, pebble, tmp_path, config, make_engine(config.db_url), port, anchors,
                      roots_file)
        fleet.trust_pebble_roots()
        return fleet

    return build
