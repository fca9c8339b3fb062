"""Fixtures for certd's HTTP surface: the daemon (Pebble + Cloudflare emulator) with an OCPP
listener and real `ocpp` chargers, and a real HTTP client against its server."""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from certd.config import parse_config
from certd.ocpp import auth, charger_registry
from certd.sandbox.certd_config import SANDBOX_HTTP, toml_str
from tests.daemon.conftest import (  # noqa: F401 - fixtures used by this folder's tests
    MovableClock, Setup, cert_toml, make_setup, pebble_factory, run, running_daemon,
)
from tests.ocpp.conftest import basic, boot16, charge_point

HOST = "ocpp.example.com"
LISTENER = "main"
CHARGER_PASSWORD = "charger-password-for-http-tests"


def ocpp_toml(roots_file: Path, *, certificate: str = "web", extra: str = "") -> str:
    return f"""
[ocpp]
reload_check_interval = 0
trust_roots = [{toml_str(roots_file)}]
{extra}

[[ocpp.listeners]]
name = "{LISTENER}"
host = "{HOST}"
bind = ["127.0.0.1"]
port = 0
certificates = ["{certificate}"]
"""


def with_http(setup: Setup, body: str, *, parse: bool = True) -> Setup:
    """The same setup with `body` (no blank line in it) as its [http] table, in the config file too;
    `parse=False` for a body the config model refuses (check-config is then what is tested)."""
    assert "\n\n" not in body
    text, count = re.subn(r"\[http\]\n.*?\n\n", lambda _: f"[http]\n{body}\n\n", setup.text, count=1, flags=re.S)
    assert count == 1
    setup.config_path.write_text(text)
    setup.text = text
    if parse:
        setup.config = parse_config(text, str(setup.config_path))
    return setup


def trust_pebble(setup: Setup, roots_file: Path) -> ssl.SSLContext:
    """Write Pebble's roots for [ocpp] trust_roots; a client context trusting them."""
    roots = "".join(setup.pebble.roots())
    roots_file.write_text(roots)
    return ssl.create_default_context(cadata=roots)


def register_chargers(setup: Setup, ids: list[str]) -> None:
    hashed = auth.hash_password(CHARGER_PASSWORD)
    for charger_id in ids:
        charger_registry.insert_charger(setup.engine, charger_id, password_hash=hashed, heartbeat_class="default")


def base_url(daemon: Any) -> str:
    host, port = daemon._http.addresses[0]
    return f"{daemon._http.scheme}://{host}:{port}"


@contextlib.asynccontextmanager
async def connected_chargers(daemon: Any, ids: list[str], context: ssl.SSLContext) -> AsyncIterator[list[Any]]:
    """Real OCPP 1.6 chargers, booted, connected for the block's duration."""
    port = daemon.ocpp.listener(LISTENER).ports[0]
    async with contextlib.AsyncExitStack() as stack:
        points = []
        for charger_id in ids:
            ws = await stack.enter_async_context(connect(
                f"wss://127.0.0.1:{port}/ocpp/{charger_id}", ssl=context, server_hostname=HOST,
                subprotocols=["ocpp1.6"], additional_headers=basic(charger_id, CHARGER_PASSWORD),
                open_timeout=10))
            cp = await stack.enter_async_context(charge_point(ws, "ocpp1.6", charger_id))
            assert (await cp.call(boot16())).status == "Accepted"
            points.append(cp)
        yield points


async def get(url: str, headers: dict[str, str] | None = None, *,
              ssl_context: ssl.SSLContext | None = None) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url, headers=headers or {}, ssl=ssl_context if ssl_context else None) as response:
            return response.status, await response.text(), dict(response.headers)


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], parsed by prometheus_client's own parser."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def value(parsed: dict[str, list[tuple[dict[str, str], float]]], metric: str, /, **labels: str) -> float | None:
    """The value of the one sample of `metric` whose labels include `labels` (None: no such sample)."""
    matching = [v for l, v in parsed.get(metric, []) if all(l.get(k) == want for k, want in labels.items())]
    assert len(matching) <= 1, (metric, labels, matching)
    return matching[0] if matching else None


@pytest.fixture
def http_setup(make_setup: Callable[..., Setup], tmp_path: Path) -> Callable[..., tuple[Setup, ssl.SSLContext]]:
    """A daemon setup with one certificate `web` served by OCPP listener `main`, Pebble roots trusted."""

    def build(*, validity: int = 4 * 3600, http: str = SANDBOX_HTTP, extra: str = "",
              **options: Any) -> tuple[Setup, ssl.SSLContext]:
        roots_file = tmp_path / "pebble-roots.pem"
        roots_file.write_text("")
        setup = make_setup(cert_toml("web", [HOST]), validity=validity,
                           extra=ocpp_toml(roots_file) + extra, **options)
        context = trust_pebble(setup, roots_file)
        return with_http(setup, http), context

    return build
