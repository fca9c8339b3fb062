"""Fixtures for the OCPP endpoint: a test CA, a store, a running OcppService, real clients.

Everything is real: TLS handshakes over loopback, websockets, `ocpp` ChargePoint
clients, SQLite (and PostgreSQL for the registry tests). Clients trust only the
test CA's root.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from certd.runtime import eventloop
from certd.config import Config
from certd.ocpp import auth, charger_registry
from certd.ocpp.service import OcppService
from certd.sandbox.certd_config import ocpp_listener
from certd.store.db import make_engine, upgrade
from tests.pki import MiniCA
from tests.waits import peer_certificate

HOST = "ocpp.example.test"
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="session")
def ca() -> MiniCA:
    return MiniCA()


@pytest.fixture(scope="session")
def ca_file(ca: MiniCA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "root.pem"
    path.write_text(ca.root_pem)
    return path


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'certd.db'}"
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


def register(engine, *charger_ids: str, heartbeat_class: str = "default", password: str = PASSWORD,  # type: ignore[no-untyped-def]
             **fields: Any) -> None:
    """Known chargers with `password`, hashed as `certd chargers add` stores it."""
    for charger_id in charger_ids:
        charger_registry.insert_charger(engine, charger_id, password_hash=auth.hash_password(password),
                                        heartbeat_class=heartbeat_class, **fields)


@pytest.fixture
def store(engine):  # type: ignore[no-untyped-def]
    """Two known gsm-class chargers, CP1 and CP2, with PASSWORD; no certificate yet."""
    register(engine, "CP1", "CP2", heartbeat_class="gsm")
    return engine


def make_config(ca_file: Path, *, listeners: list[dict[str, Any]] | None = None,
                certificates: list[dict[str, Any]] | None = None, **ocpp: Any) -> Config:
    """A Config with an [ocpp] section; certificates named in listeners are declared for you."""
    listeners = listeners if listeners is not None else [ocpp_listener("main", HOST, certificates=["rsa"])]
    names = sorted({n for lst in listeners for n in lst.get("certificates", [])})
    certificates = certificates or [
        {"name": n, "domains": [HOST], "key_type": "ec-p256" if n.startswith("ec") else "rsa2048"}
        for n in names
    ]
    data = {
        "state_dir": "/nonexistent",
        "certificates": certificates,
        "ocpp": {"listeners": listeners, "trust_roots": [str(ca_file)],
                 "reload_check_interval": 0, **ocpp},
    }
    return Config.model_validate(data)


@contextlib.asynccontextmanager
async def running(config: Config, engine) -> AsyncIterator[OcppService]:  # type: ignore[no-untyped-def]
    service = OcppService(config, engine)
    await service.start()
    try:
        yield service
    finally:
        await service.close()


def client_context(ca: MiniCA, **kwargs: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.root_pem)
    for key, value in kwargs.items():
        setattr(ctx, key, value)
    return ctx


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def ws_url(service: OcppService, path: str, listener: str = "main", scheme: str = "wss") -> str:
    port = service.listener(listener).ports[0]
    return f"{scheme}://127.0.0.1:{port}{path}"


def open_ws(service: OcppService, path: str, ca: MiniCA, *, listener: str = "main",
            subprotocols: list[str] | None = ("ocpp1.6",),  # type: ignore[assignment]
            headers: dict[str, str] | None = None, ssl_context: ssl.SSLContext | None = None,
            server_hostname: str | None = HOST, **kwargs: Any):  # type: ignore[no-untyped-def]
    return connect(
        ws_url(service, path, listener),
        ssl=ssl_context or client_context(ca),
        server_hostname=server_hostname,
        subprotocols=list(subprotocols) if subprotocols else None,
        additional_headers=headers or {},
        open_timeout=10,
        **kwargs,
    )


def peer_serial(ws: ClientConnection) -> str:
    return f"{peer_certificate(ws.transport.get_extra_info('ssl_object')).serial_number:x}"


def run(coro):  # type: ignore[no-untyped-def]
    """Run one test coroutine with a bound (a hung handshake fails the test, not CI).

    On the loop `certd serve` uses (uvloop when installed; CERTD_EVENT_LOOP=asyncio
    runs the suite on asyncio's own loop).
    """
    async def bounded():  # type: ignore[no-untyped-def]
        async with asyncio.timeout(60):
            return await coro
    return eventloop.run(bounded())


@contextlib.asynccontextmanager
async def charge_point(ws: ClientConnection, version: str, charger_id: str):  # type: ignore[no-untyped-def]
    """A real `ocpp` ChargePoint client reading from `ws` in a task."""
    if version == "ocpp1.6":
        from ocpp.v16 import ChargePoint
    elif version == "ocpp2.0.1":
        from ocpp.v201 import ChargePoint
    else:
        from ocpp.v21 import ChargePoint
    cp = ChargePoint(charger_id, ws, response_timeout=10)
    task = asyncio.get_running_loop().create_task(cp.start())
    try:
        yield cp
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await task


def boot16():  # type: ignore[no-untyped-def]
    from ocpp.v16 import call

    return call.BootNotification(charge_point_vendor="TestVendor", charge_point_model="GSM-1",
                                 firmware_version="1.2.3")


def boot201():  # type: ignore[no-untyped-def]
    from ocpp.v201 import call

    return call.BootNotification(
        charging_station={"vendor_name": "BMW", "model": "Wallbox Plus", "firmware_version": "4.5"},
        reason="PowerUp",
    )
