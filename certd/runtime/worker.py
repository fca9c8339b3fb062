"""One OCPP worker process of `certd run` (`certd serve --worker K`, started by certd.runtime.workers).

It serves every listener on the ports it shares with the other workers
(SO_REUSEPORT), takes part in the store as node "<node>-wK" (on PostgreSQL a node
among the others: certd.runtime.worker_node), runs the rollover engine for the
chargers connected to it, and reloads what it serves when the supervisor (or any
certd process on this machine) deploys a certificate: the live-copy watch, with
the listeners' periodic store check as the safety net. No scheduler runs here;
renewals are the supervisor's.

Signals: SIGTERM/SIGINT close every connection cleanly and mark this worker's
chargers offline; SIGHUP re-reads the config file (the supervisor forwards its
own SIGHUP). The supervisor's end of the socketpair closing means it is gone:
the worker stops too.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

from certd.config import Config, load_config
from certd.config.node import node_name
from certd.errors import CertdError, ConfigError
from certd.runtime.services import OcppServices
from certd.runtime.watch import LiveCopyWatcher
from certd.runtime.worker_node import WorkerNode
from certd.runtime.workers import worker_config
from certd.store.types import utcnow

log = logging.getLogger("certd.workers")


def tag_log_lines(node: str) -> None:
    """Every log line of this process names the worker (they share the supervisor's stderr)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{node}] %(name)s: %(message)s"))


class Worker:
    def __init__(self, config_path: Path, config: Config, index: int, ports: dict[int, int],
                 supervisor_fd: int | None) -> None:
        self.config_path = config_path
        self.index = index
        self.ports = ports
        self.config = worker_config(config, ports)
        self.node = node_name(config)  # "<node>-wK": the supervisor sets $CERTD_NODE_NAME
        self._supervisor_fd = supervisor_fd
        self._stop = asyncio.Event()
        self._reloads: set[asyncio.Task[None]] = set()

    async def run(self) -> int:
        from certd.store.db import make_engine

        engine = await asyncio.to_thread(make_engine, self.config.db_url, self.config.store)
        self.services = OcppServices(engine, utcnow, reuse_port=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        link = await self._link()
        watch: LiveCopyWatcher | None = None
        self.store_node: WorkerNode | None = None
        try:
            await self.services.start(self.config)
            if self.services.endpoint is None:
                return 1  # the reason is logged; the supervisor restarts this worker later
            watch = LiveCopyWatcher(Path(self.config.state_dir) / "live", self._deployed)
            await watch.start()
            if WorkerNode.wanted(engine):  # PostgreSQL: a node among the others
                self.store_node = WorkerNode(self.node, self.config, engine, self.services)
                await self.store_node.start()
            waits = [asyncio.ensure_future(self._stop.wait())]
            if link is not None:
                reader, writer = link
                writer.write(f"ready {self.node}\n".encode())
                await writer.drain()
                waits.append(asyncio.ensure_future(reader.read()))  # b"" once the supervisor is gone
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in pending:
                wait.cancel()
            if not self._stop.is_set():
                log.warning("the supervisor is gone: stopping")
            return 0
        finally:
            if self.store_node is not None:
                await self.store_node.close()
            if watch is not None:
                await watch.close()
            await self.services.close()
            await asyncio.to_thread(engine.dispose)

    async def _link(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        if self._supervisor_fd is None:
            return None
        sock = socket.socket(fileno=self._supervisor_fd)
        return await asyncio.open_unix_connection(sock=sock)

    async def _deployed(self, names: set[str]) -> None:
        known = {cert.name for cert in self.config.certificates}
        for name in sorted(names & known):
            await self.services.after_deploy(name)

    def _on_hup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> None:
        """Re-read the config file; a bad one keeps the current config (and says why)."""
        from certd.runtime.daemon import restart_only_changes

        try:
            new = await asyncio.to_thread(load_config, self.config_path)
            problem = restart_only_changes(self.config, new)
            if problem:
                raise ConfigError(f"{self.config_path}: {problem}")
        except CertdError as exc:
            log.error("reload failed; still serving on the previous configuration:\n%s", exc)
            return
        old, self.config = self.config, worker_config(new, self.ports)
        if self.store_node is not None:
            self.store_node.config = self.config
        await self.services.apply(old, self.config)
