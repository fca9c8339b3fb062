"""Several `certd run` nodes on one PostgreSQL: node processes, a TCP proxy per node in front of
the database (the test cuts a node off with it), a private PostgreSQL the test may restart.

Each node has its own config file, state_dir, target files, deploy hook log, node name and
OCPP listener port, as on separate hosts; with `namespace=True` each runs in a PID namespace
of its own (`unshare --pid --fork --mount-proc --kill-child`), so no lease can be freed by
a same-machine PID check: only by its expiry, as across hosts.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from certd.sandbox import PebbleServer, SandboxWorld
from certd.sandbox.certd_config import TOKEN_ENV, certificate_toml, sandbox_config_toml, toml_str
from certd.store import leases
from certd.store.db import make_engine, session_scope, upgrade
from certd.store.models import IssuanceAttempt, IssuedCertificate, ManagedCertificate
from certd.store.nodes import Node
from tests.conftest import missing_part
from tests.daemon.conftest import make_setup, pebble_factory  # noqa: F401 - fixtures used here
from tests.nodes.tcp_proxy import TcpProxy

HOST = "local.example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll with short growing intervals; returns the seconds waited."""
    start = time.monotonic()
    delay = 0.02
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
    return time.monotonic() - start


@dataclass
class NodeProc:
    name: str
    dir: Path
    config_path: Path
    port: int | None  # its OCPP listener
    proxy: TcpProxy | None
    proc: subprocess.Popen[str] | None = None

    @property
    def target(self) -> Path:
        return self.dir / "ssl" / "fullchain.pem"

    @property
    def hook_log(self) -> Path:
        return self.dir / "hooks.log"

    def log(self) -> str:
        return (self.dir / "node.log").read_text(errors="replace")

    def files_serial(self) -> int | None:
        """The serial of the leaf in this node's own target file (None: not written yet)."""
        from cryptography import x509

        try:
            return x509.load_pem_x509_certificate(self.target.read_bytes()).serial_number
        except (OSError, ValueError):
            return None

    def served_serial(self) -> int | None:
        """The serial this node's OCPP listener hands out in a TLS handshake right now."""
        import ssl

        from cryptography import x509

        assert self.port is not None
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
                with context.wrap_socket(raw, server_hostname=HOST) as tls:
                    der = tls.getpeercert(binary_form=True)
        except OSError:
            return None
        return x509.load_der_x509_certificate(der).serial_number if der else None

    def hook_serials(self) -> list[int]:
        try:
            lines = self.hook_log.read_text().split()
        except FileNotFoundError:
            return []
        return [int(line.removeprefix("serial="), 16) for line in lines if line.startswith("serial=")]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Fleet:
    world: SandboxWorld
    pebble: PebbleServer
    tmp: Path
    db_url: str
    engine: sa.Engine
    nodes: list[NodeProc] = field(default_factory=list)
    operator: NodeProc | None = None

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A hand-run command with the operator's config (same store, no listener)."""
        assert self.operator is not None
        return subprocess.run([sys.executable, "-m", "certd", "--config", str(self.operator.config_path), *args],
                              env=self.env(), capture_output=True, text=True, timeout=timeout)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[TOKEN_ENV] = self.world.token
        env.pop("CERTD_NODE_NAME", None)
        return env

    def start(self, node: NodeProc, *, namespace: bool = False) -> None:
        command = [sys.executable, "-m", "certd", "--config", str(node.config_path), "run"]
        if namespace:
            command = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *command]
        log = open(node.dir / "node.log", "a")  # noqa: SIM115 - closed by the OS with the child
        node.proc = subprocess.Popen(command, env=self.env(), stdout=log, stderr=subprocess.STDOUT, text=True)

    def kill(self, node: NodeProc) -> None:
        """SIGKILL (with --kill-child, the namespace's init and every process in it die too)."""
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(10)

    def by_name(self, name: str) -> NodeProc:
        return next(n for n in self.nodes if n.name == name)

    # -- store views ------------------------------------------------------------------------
    def current(self, name: str = "web") -> IssuedCertificate | None:
        with session_scope(self.engine) as session:
            managed = session.get(ManagedCertificate, name)
            if managed is None or managed.current_id is None:
                return None
            return session.get(IssuedCertificate, managed.current_id)

    def issued(self, name: str = "web") -> list[IssuedCertificate]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(IssuedCertificate).where(IssuedCertificate.name == name)
                                     .order_by(IssuedCertificate.id)).all())

    def attempts(self) -> list[IssuanceAttempt]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(IssuanceAttempt).order_by(IssuanceAttempt.id)).all())

    def txt_records(self) -> list[dict]:  # type: ignore[type-arg]
        return [r for r in self.world.emulator.records() if r["type"] == "TXT"]

    def lease_holder(self, lease: str) -> NodeProc | None:
        """The node process holding `lease` now (matched by its kernel process identity)."""
        table = leases.Lease.__table__  # type: ignore[attr-defined]
        with session_scope(self.engine) as session:
            row = session.execute(sa.select(table).where(table.c.name == lease)).first()
            if row is None:
                return None
            node = session.exec(select(Node).where(Node.process == row.node, Node.pid == row.pid)).first()
        return self.by_name(node.name) if node is not None else None


def node_toml(fleet_dir: Path, world: SandboxWorld, pebble: PebbleServer, name: str, db_url: str,
              port: int | None, roots: Path, *, grace: float, ocpp: str = "", extra: str = "",
              node: str = "") -> tuple[Path, Path]:
    node_dir = fleet_dir / name
    (node_dir / "ssl").mkdir(parents=True)
    hook = f"openssl x509 -noout -serial -in \"$RENEWED_LINEAGE/cert.pem\" >> {node_dir / 'hooks.log'}"
    cert = certificate_toml("web", [HOST], target_dir=node_dir / "ssl", kinds=("fullchain", "privkey"),
                            hooks=[hook])
    listener = "" if port is None else f"""
[ocpp]
reload_check_interval = 0      # only NOTIFY (and the node's own deploys) may bring new material
trust_roots = [{toml_str(roots)}]
{ocpp}

[[ocpp.listeners]]
name = "wallbox"
host = "{HOST}"
bind = ["127.0.0.1"]
port = {port}
certificates = ["web"]
"""
    extra = f"""
[node]
name = "{name}"
address = "127.0.0.1:{port or 0}"
gone_after = 10
{node}
{listener}
{extra}"""
    text = f"database_url = {toml_str(db_url)}\n" + sandbox_config_toml(world, pebble, node_dir / "state", cert,
                                                                         extra=extra)
    # [dns] propagation_grace: each order keeps its TXT records published this long.
    text = text.replace("propagation_timeout = 20\n", f"propagation_timeout = 20\npropagation_grace = {grace}\n", 1)
    path = node_dir / "certd.toml"
    path.write_text(text)
    return node_dir, path


@pytest.fixture
def make_fleet(cf_world: SandboxWorld, pebble_factory: Callable[..., PebbleServer],  # noqa: F811
               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Fleet]]:
    """`count` nodes sharing the store at `db_url`, each through a TCP proxy of its own."""
    monkeypatch.setenv(TOKEN_ENV, cf_world.token)
    fleets: list[Fleet] = []

    def build(db_url: str, count: int = 3, *, validity: int | None = 3600, listeners: bool = False,
              grace: float = 0.0, ocpp: str = "", extra: str = "", operator: bool = False, node: str = "",
              alternate_roots: int = 0) -> Fleet:
        """`operator`: one more config, named "operator", without listener, never started
        (for hand-run commands against the same store); `node`: more `[node]` keys."""
        pebble = pebble_factory(validity_seconds=validity, alternate_roots=alternate_roots)
        roots = tmp_path / "pebble-roots.pem"
        roots.write_text("".join(pebble.roots()))
        upgrade(db_url)
        fleet = Fleet(cf_world, pebble, tmp_path, db_url, make_engine(db_url))
        fleets.append(fleet)
        url = sa.engine.make_url(db_url)
        for index in range(count):
            name = f"node-{'abcdefgh'[index]}"
            proxy = TcpProxy(url.host or "127.0.0.1", int(url.port or 5432)).start()
            node_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            port = free_port() if listeners else None
            node_dir, path = node_toml(tmp_path, cf_world, pebble, name, node_url, port, roots, grace=grace,
                                       ocpp=ocpp, extra=extra, node=node)
            fleet.nodes.append(NodeProc(name, node_dir, path, port, proxy))
        if operator:
            node_dir, path = node_toml(tmp_path, cf_world, pebble, "operator", db_url, None, roots, grace=grace,
                                       extra=extra)
            fleet.operator = NodeProc("operator", node_dir, path, None, None)
        return fleet

    yield build
    for fleet in fleets:
        for node in fleet.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(10)
            if node.proxy is not None:
                node.proxy.stop()
        fleet.engine.dispose()


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the test's own (Debian's binaries), so it may be restarted."""

    bin_dir: Path
    data: Path
    port: int

    def _ctl(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin_dir / "pg_ctl"), "-D", str(self.data),
                        "-w", "-l", str(self.data.parent / "server.log"), *args],
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c fsync=off "
                        "-c max_connections=200", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_pg(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivatePostgres]:
    # certd refuses to store private keys in PostgreSQL unencrypted (as the pg_url fixture does).
    monkeypatch.setenv("CERTD_STORE_KEY", base64.b64encode(os.urandom(32)).decode())
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates or shutil.which("runuser") is None:
        missing_part("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin) or runuser")
    bin_dir = candidates[-1].parent
    base = Path(tempfile.mkdtemp(prefix="certd-pg-", dir="/tmp"))
    shutil.chown(base, "postgres")
    data = base / "data"
    server = PrivatePostgres(bin_dir, data, free_port())
    try:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


class Notifications:
    """The test's own LISTEN on the store: when each notification arrived (monotonic time)."""

    def __init__(self, db_url: str) -> None:
        import psycopg

        from certd.runtime.notify_listener import conninfo, parse

        dsn, extra = conninfo(db_url)
        self._conn = psycopg.connect(dsn, autocommit=True, **extra)  # type: ignore[arg-type]
        self._conn.execute("LISTEN certd")
        self._parse = parse
        self.seen: list[tuple[float, dict]] = []  # type: ignore[type-arg]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for note in self._conn.notifies(timeout=0.2):
                event = self._parse(note.payload)
                if event is not None:
                    self.seen.append((time.monotonic(), event))

    def when_issued(self, issued_id: int) -> float | None:
        return next((at for at, e in self.seen if e["k"] == "issued" and e.get("id") == issued_id), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()
