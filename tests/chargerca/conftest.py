"""Fixtures for the charger CA: a store, a server certificate, profile-2 and profile-3 listeners
side by side, and a charger registered with a password.

Real parts throughout: TLS over loopback (the server's certificate from the test CA,
the chargers' from certd's charger CA), websockets, `ocpp` clients, SQLite.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from certd.config import Config
from certd.ocpp import auth, charger_registry
from certd.ocpp.service import OcppService
from tests.ocpp.conftest import HOST, basic, ca, ca_file, engine, run  # noqa: F401 (fixtures)
from tests.pki import MiniCA, store_current

from tests.chargerca.chargers import ORG

PASSWORD = "correct-horse-battery-staple-42"


def settings(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"organization": ORG, "key_dir": str(tmp_path / "ca-keys"),
                              "check_interval": 0.2, "revocation_check_interval": 0.2,
                              "retry_base": 1.0, "retry_max": 5.0}
    values.update(overrides)
    return values


def make_config(ca_file: Path, tmp_path: Path, *, charger_ca: dict[str, Any] | None = None,
                profile3: dict[str, Any] | None = None, listeners: list[dict[str, Any]] | None = None,
                **ocpp: Any) -> Config:
    """Listener "p2" (password) and "p3" (client certificate), both serving certificate "rsa"."""
    if listeners is None:
        listeners = [
            {"name": "p2", "host": HOST, "bind": ["127.0.0.1"], "port": 0, "certificates": ["rsa"]},
            {"name": "p3", "host": HOST, "bind": ["127.0.0.1"], "port": 0, "certificates": ["rsa"],
             "security_profile": 3, **(profile3 or {})},
        ]
    data = {
        "state_dir": str(tmp_path / "state"),
        "certificates": [{"name": "rsa", "domains": [HOST], "key_type": "rsa2048"}],
        "ocpp": {"listeners": listeners, "trust_roots": [str(ca_file)], "reload_check_interval": 0,
                 "charger_ca": settings(tmp_path, **(charger_ca or {})), **ocpp},
    }
    return Config.model_validate(data)


def serve_certificate(engine, ca: MiniCA) -> None:  # type: ignore[no-untyped-def]
    store_current(engine, "rsa", ca.issue([HOST]))


def register(engine, charger_id: str, *, password: str | None = PASSWORD, **values: Any) -> None:  # type: ignore[no-untyped-def]
    charger_registry.insert_charger(engine, charger_id,
                                    password_hash=auth.hash_password(password) if password else None,
                                    heartbeat_class="default", **values)


@contextlib.asynccontextmanager
async def running(config: Config, engine) -> AsyncIterator[OcppService]:  # type: ignore[no-untyped-def]
    service = OcppService(config, engine)
    await service.start()
    try:
        yield service
    finally:
        await service.close()


def url(service: OcppService, listener: str, charger_id: str) -> str:
    return f"wss://127.0.0.1:{service.listener(listener).ports[0]}/ocpp/{charger_id}"


def connect(service: OcppService, listener: str, charger_id: str, version: str, *,
            ssl_context: ssl.SSLContext, password: str | None = None, **kwargs: Any):  # type: ignore[no-untyped-def]
    from websockets.asyncio.client import connect as ws_connect

    return ws_connect(url(service, listener, charger_id), ssl=ssl_context, server_hostname=HOST,
                      subprotocols=[version],  # type: ignore[list-item]
                      additional_headers=basic(charger_id, password) if password else {},
                      open_timeout=15, **kwargs)


def server_trust(ca: MiniCA) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.root_pem)


@pytest.fixture
def p3_setup(engine, ca: MiniCA, ca_file: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """(config, engine) with a served certificate; chargers are registered by each test."""
    serve_certificate(engine, ca)
    return make_config(ca_file, tmp_path), engine
