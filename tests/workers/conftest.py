"""`certd run` with OCPP workers as a real process tree: the supervisor, its workers, real
TLS chargers (`ocpp` ChargePoint clients) that reconnect like chargers do, and the store.

The supervisor's readiness is read the way systemd reads it (READY=1 on $NOTIFY_SOCKET,
sent once every worker listens). The certificate comes from a test CA, stored as the
current issuance; the DNS provider is the in-memory one and the ACME directory is
unreachable: nothing here is due for renewal, and nothing needs the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
import websockets
from websockets.asyncio.client import connect

from certd.sandbox.certd_config import toml_str
from certd.store.db import make_engine, upgrade
from tests.pki import MiniCA, store_current

HOST = "ocpp.workers.test"
NODE = "box"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def children(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:  # already gone: no children either
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Box:
    """A config for `certd run` with `workers` OCPP workers on one fixed port, and its store."""

    tmp: Path
    ca: MiniCA
    port: int
    workers: int
    url: str
    engine: sa.Engine
    proc: subprocess.Popen[str] | None = None
    started: list[subprocess.Popen[str]] = field(default_factory=list)
    notify: socket.socket | None = None  # kept open: the supervisor sends STATUS= later too

    @property
    def config_path(self) -> Path:
        return self.tmp / "certd.toml"

    @property
    def log_path(self) -> Path:
        return self.tmp / "certd.log"

    def log(self) -> str:
        return self.log_path.read_text()

    def start(self, timeout: float = 60) -> None:
        path = self.tmp / "notify.sock"
        if self.notify is not None:
            self.notify.close()
        path.unlink(missing_ok=True)
        self.notify = listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(str(path))
        listener.settimeout(timeout)
        env = dict(os.environ, NOTIFY_SOCKET=str(path))
        log = open(self.log_path, "a")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "certd", "--config", str(self.config_path), "run"],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        self.started.append(self.proc)
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = listener.recv(4096).decode()
            except TimeoutError:
                raise AssertionError(f"certd run sent no READY=1:\n{self.log()}") from None
            if "READY=1" in message.split("\n"):
                return
            assert time.monotonic() < deadline and self.proc.poll() is None, self.log()

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid of the supervisor's live `certd serve --worker K` children."""
        assert self.proc is not None
        found = {}
        for pid in children(self.proc.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--worker" in argv and alive(pid):
                found[int(argv[argv.index(b"--worker") + 1])] = pid
        return found

    def nodes(self) -> Counter[str | None]:
        """How many registered chargers each node holds (None: offline)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT connected_node FROM charger")).all()
        return Counter(row[0] for row in rows)

    def issue(self) -> str:
        """A new certificate from the test CA, stored as the current issuance; its serial."""
        leaf = self.ca.issue([HOST], "rsa")
        store_current(self.engine, "web", leaf)
        return leaf.serial


@pytest.fixture
def make_box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Box]]:
    """`db_url`: PostgreSQL (the pg_url fixture, which sets the store key); default SQLite, keyless."""
    boxes: list[Box] = []

    def build(workers: int = 2, db_url: str | None = None) -> Box:
        if db_url is None:
            monkeypatch.delenv("CERTD_STORE_KEY", raising=False)
        url = db_url or f"sqlite:///{tmp_path / 'certd.db'}"
        upgrade(url)
        box = Box(tmp_path, MiniCA("workers"), free_port(), workers, url, make_engine(url))
        box.issue()
        (tmp_path / "root.pem").write_text(box.ca.root_pem)
        box.config_path.write_text(f"""
state_dir = {toml_str(tmp_path / 'state')}
database_url = {toml_str(url)}

[acme]
directory = "https://127.0.0.1:9/directory"

[dns]
provider = "memory"

[http]
listen = ["127.0.0.1:0"]           # not certd's default 9402: tests never fight over a fixed port

[[certificates]]
name = "web"
domains = ["{HOST}"]

[ocpp]
workers = {workers}
node_name = "{NODE}"
unknown_chargers = "accept"
reload_check_interval = 0          # material changes arrive only through the live-copy watch
trust_roots = [{toml_str(tmp_path / 'root.pem')}]

[[ocpp.listeners]]
name = "main"
host = "{HOST}"
bind = ["127.0.0.1"]
port = {box.port}
certificates = ["web"]
""")
        boxes.append(box)
        return box

    yield build
    for box in boxes:
        for proc in box.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        if box.notify is not None:
            box.notify.close()
        box.engine.dispose()


@dataclass
class Fleet:
    """Chargers that stay connected: after a drop each reconnects (0.2 s later), as chargers do."""

    port: int
    ca_pem: str
    connects: Counter[str] = field(default_factory=Counter)
    booted: Counter[str] = field(default_factory=Counter)
    online: set[str] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def charger(self, charger_id: str) -> None:
        from ocpp.v16 import call

        ctx = ssl.create_default_context(cadata=self.ca_pem)
        while not self.stop.is_set():
            try:
                async with connect(f"wss://127.0.0.1:{self.port}/ocpp/{charger_id}", ssl=ctx,
                                   server_hostname=HOST, subprotocols=["ocpp1.6"],
                                   open_timeout=15) as ws:
                    self.connects[charger_id] += 1
                    cp = charge_point_class()(charger_id, ws, response_timeout=15)
                    reader = asyncio.ensure_future(cp.start())
                    boot = await cp.call(call.BootNotification(charge_point_vendor="Test",
                                                               charge_point_model="Workers"))
                    if boot.status == "Accepted":
                        self.booted[charger_id] += 1
                        self.online.add(charger_id)
                    stopping = asyncio.ensure_future(self.stop.wait())
                    await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    stopping.cancel()
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                        await reader
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
                pass
            self.online.discard(charger_id)
            if not self.stop.is_set():
                await asyncio.sleep(0.2)

    async def wait_online(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.online) < count:
            assert time.monotonic() < deadline, f"{len(self.online)}/{count} chargers online"
            await asyncio.sleep(0.05)


def charge_point_class():  # type: ignore[no-untyped-def]
    """An `ocpp` 1.6 charger that answers GetConfiguration (what `certd nodes call` asks here)."""
    from ocpp.routing import on
    from ocpp.v16 import ChargePoint, call_result

    class Charger(ChargePoint):  # type: ignore[misc]
        @on("GetConfiguration")
        async def on_get_configuration(self, **_: object):  # type: ignore[no-untyped-def]
            return call_result.GetConfiguration(
                configuration_key=[{"key": "ChargePointId", "readonly": True, "value": self.id}])

    return Charger


def kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
