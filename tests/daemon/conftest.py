"""Fixtures for the renewal daemon: Pebble with short lifetimes, a movable clock, the daemon
in-process or as a `certd run` subprocess, and an ARI proxy in front of Pebble."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlmodel import select

from certd.config import parse_config
from certd.runtime.daemon import Daemon
from certd.sandbox import PebbleNotFoundError, PebbleServer, SandboxWorld, find_pebble
from certd.sandbox.certd_config import TOKEN_ENV, certificate_toml, sandbox_config_toml, toml_str
from certd.store.db import make_engine, session_scope, upgrade
from certd.store.models import IssuanceAttempt, IssuedCertificate, ManagedCertificate
from certd.store.renewal import RenewalState
from tests.conftest import missing_part
from tests.daemon.ari_proxy import AriProxy
from tests.obtain.conftest import Setup as IssueSetup
from tests.waits import wait_until  # noqa: F401  (the daemon tests import it from here)


class MovableClock:
    """Wall-clock time plus an offset the test moves forward (the daemon's injectable clock)."""

    def __init__(self) -> None:
        self._offset = dt.timedelta(0)
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return dt.datetime.now(dt.timezone.utc) + self._offset

    def advance(self, delta: dt.timedelta) -> None:
        with self._lock:
            self._offset += delta


def cert_toml(name: str, domains: list[str], *, target_dir: Path | None = None, hooks: list[str] = (),
              extra: str = "") -> str:
    """fullchain + privkey in `target_dir`, as most consumers read them."""
    return certificate_toml(name, domains, target_dir=target_dir, kinds=("fullchain", "privkey"),
                            hooks=hooks, extra=extra)


@dataclass
class Setup(IssueSetup):
    """The issuance tests' setup plus child daemons and store views."""

    text: str = ""
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """`certd run` (or another command) as a child process; stderr goes to a file."""
        log = open(self.tmp / f"daemon-{len(self.procs)}.log", "w")  # noqa: SIM115 - closed by the OS
        proc = subprocess.Popen([sys.executable, "-m", "certd", "--config", str(self.config_path), *args],
                                env=env or self.env(), stdout=log, stderr=subprocess.STDOUT, text=True)
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    # -- store views -----------------------------------------------------------------------
    def current(self, name: str) -> IssuedCertificate | None:
        with session_scope(self.engine) as session:
            managed = session.get(ManagedCertificate, name)
            if managed is None or managed.current_id is None:
                return None
            return session.get(IssuedCertificate, managed.current_id)

    def managed(self, name: str) -> ManagedCertificate:
        with session_scope(self.engine) as session:
            row = session.get(ManagedCertificate, name)
            assert row is not None
            return row

    def renewal(self, name: str) -> RenewalState:
        with session_scope(self.engine) as session:
            row = session.get(RenewalState, name)
            assert row is not None
            return row

    def attempts(self, name: str | None = None) -> list[IssuanceAttempt]:
        with session_scope(self.engine) as session:
            query = select(IssuanceAttempt).order_by(IssuanceAttempt.id)  # type: ignore[arg-type]
            if name:
                query = query.where(IssuanceAttempt.name == name)
            return list(session.exec(query).all())

    def txt_records(self) -> list[dict]:  # type: ignore[type-arg]
        return [r for r in self.world.emulator.records() if r["type"] == "TXT"]


def log_text(proc: subprocess.Popen[str]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


@pytest.fixture
def pebble_factory(cf_world: SandboxWorld) -> Iterator[Callable[..., PebbleServer]]:
    try:
        find_pebble()
    except PebbleNotFoundError as exc:
        missing_part(str(exc))
    started: list[PebbleServer] = []

    def make(**options: object) -> PebbleServer:
        server = PebbleServer(cf_world.dns_addr, **options).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def make_setup(cf_world: SandboxWorld, pebble_factory: Callable[..., PebbleServer], tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Setup]]:
    """Config + store for a certificates snippet; `validity` shortens Pebble's leaf lifetime."""
    monkeypatch.setenv(TOKEN_ENV, cf_world.token)
    setups: list[Setup] = []

    def build(certificates: str, *, validity: int | None = None, extra: str = "", top: str = "",
              acme_url: str | None = None, ca_bundle: Path | None = None,
              pebble: PebbleServer | None = None, db_url: str | None = None,
              cloudflare_retries: int | None = None) -> Setup:
        pebble = pebble or pebble_factory(validity_seconds=validity)
        if db_url:
            top = f"database_url = {toml_str(db_url)}\n" + top
        text = top + "\n" + sandbox_config_toml(cf_world, pebble, tmp_path / "state", certificates, extra=extra)
        if cloudflare_retries is not None:  # fail fast instead of the adapter's own retries
            base = f"base_url = {toml_str(cf_world.emulator.base_url)}"
            text = text.replace(base, f"{base}\nmax_retries = {cloudflare_retries}")
        if acme_url:
            text = text.replace(toml_str(pebble.directory_url), toml_str(acme_url))
        if ca_bundle:
            text = text.replace(toml_str(pebble.https_ca_path), toml_str(ca_bundle))
        path = tmp_path / "certd.toml"
        path.write_text(text)
        config = parse_config(text, str(path))
        upgrade(config.db_url)
        setup = Setup(cf_world, pebble, tmp_path, path, config, make_engine(config.db_url), text)
        setups.append(setup)
        return setup

    yield build
    for setup in setups:
        for proc in setup.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        setup.engine.dispose()


@pytest.fixture
def ari_proxy_factory(tmp_path: Path) -> Iterator[Callable[[PebbleServer], AriProxy]]:
    proxies: list[AriProxy] = []

    def make(pebble: PebbleServer) -> AriProxy:
        proxy = AriProxy(pebble.directory_url, pebble.https_ca_path, tmp_path)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@contextlib.asynccontextmanager
async def running_daemon(setup: Setup, clock: Callable[[], dt.datetime] | None = None) -> AsyncIterator[Daemon]:
    """The daemon in this process (no signal handlers), stopped at the end."""
    daemon = Daemon(setup.config_path, setup.config, install_signals=False,
                    **({"clock": clock} if clock else {}))
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


def run(coro) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(coro)


def send(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    proc.send_signal(sig)
