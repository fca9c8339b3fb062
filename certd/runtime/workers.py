"""Every core of one box: `certd run` with `[ocpp] workers = N` serves OCPP from N processes.

The `certd run` process becomes the supervisor: it runs the daemon as always
(renewals, deploys, periodic jobs: the scheduler exists once) but instead of
opening the OCPP listeners itself it starts N workers, `certd serve --worker K`,
and restarts one that dies (with a growing delay when it keeps dying; every
exit is logged). Each worker opens every listener with SO_REUSEPORT, so all of
them listen on the same ports and the kernel spreads new connections over them;
a worker's chargers reconnect to the others while it restarts.

Each worker is a node of the store, named by `worker_node_name` ("<node>-wK"):
the charger registry shows which worker holds a charger, and a restarted worker
marks offline only the chargers it held itself. Workers learn about a deploy by
the supervisor the way any certd process on this machine does: its live copy
changes (certd.runtime.watch), and their periodic store check is the safety net.

A listener with port 0 (tests, benchmarks) gets one free port chosen here and
held (bound, never listening) for the pool's lifetime, so that every worker and
every restarted worker binds the same one.

The supervisor and a worker share a socketpair: the worker writes "ready" once
its listeners are open; the supervisor's end closing (it died, even by SIGKILL)
tells the worker to shut down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from certd.config import Config
from certd.config.node import NODE_NAME_ENV, node_name
from certd.config.ocpp import ListenerConfig
from certd.runtime.services import OcppServices

log = logging.getLogger("certd.workers")

READY_TIMEOUT = 60.0  # a worker loads trust roots and material from the store before it is ready
STOP_TIMEOUT = 30.0  # a worker closes thousands of connections (1001) and marks them offline
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # a worker that ran this long restarts after BACKOFF_MIN again
# systemd's variables are the supervisor's: a worker sending READY=1 would confuse it.
SUPERVISOR_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def worker_node_name(config: Config, index: int) -> str:
    """The node name worker `index` (1-based) takes part in the store as: this node's name
    (certd.config.node.node_name) and "-wK". The supervisor hands it to the worker in
    $CERTD_NODE_NAME, which node_name() reads first, so every part of the worker uses it."""
    return f"{node_name(config)}-w{index}"


def worker_config(config: Config, ports: dict[int, int]) -> Config:
    """`config` as a worker serves it: port-0 listeners on the pool's ports."""
    listeners = [listener.model_copy(update={"port": ports[i]}) if i in ports else listener
                 for i, listener in enumerate(config.ocpp.listeners)]
    return config.model_copy(update={"ocpp": config.ocpp.model_copy(update={"listeners": listeners})})


def restart_delay(previous: float, ran_seconds: float) -> float:
    """Seconds to wait before restarting a worker that ran `ran_seconds` (pure)."""
    if ran_seconds >= STABLE_AFTER:
        return BACKOFF_MIN
    return min(max(previous * 2, BACKOFF_MIN), BACKOFF_MAX)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "could not be started"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def format_ports(ports: dict[int, int]) -> str:
    return ",".join(f"{index}:{port}" for index, port in sorted(ports.items()))


def parse_ports(text: str | None) -> dict[int, int]:
    """'0:41234,2:41236' -> {0: 41234, 2: 41236} (`certd serve --worker-ports`)."""
    ports: dict[int, int] = {}
    for item in (text or "").split(","):
        if item:
            index, _, port = item.partition(":")
            ports[int(index)] = int(port)
    return ports


def reserve_ports(listeners: list[ListenerConfig]) -> tuple[dict[int, int], list[socket.socket]]:
    """A free port for every port-0 listener, held by bound SO_REUSEPORT sockets (never listening)."""
    ports: dict[int, int] = {}
    held: list[socket.socket] = []
    for index, listener in enumerate(listeners):
        if listener.port != 0:
            continue
        for _attempt in range(20):
            sockets = _bind_all(listener.bind or ["0.0.0.0"])
            if sockets:
                ports[index] = sockets[0].getsockname()[1]
                held += sockets
                break
        else:
            raise OSError(f"no free port for listener {listener.label} on {listener.bind}")
    return ports, held


def _bind_all(addresses: list[str]) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    port = 0
    try:
        for address in addresses:
            sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address, port))
            port = sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        return []
    return sockets


@dataclass
class _Slot:
    index: int
    node: str
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    restarts: int = 0


class WorkerPool(OcppServices):
    """The daemon's OCPP part when `[ocpp] workers` > 1: N `certd serve --worker` processes.

    Takes the place of OcppServices in the daemon (same calls); `endpoint` stays
    None since no charger connects to this process.
    """

    def __init__(self, engine: sa.Engine, clock: Callable[[], dt.datetime], *,
                 config_path: Path, verbosity: int = 0) -> None:
        super().__init__(engine, clock)
        self.config_path = config_path
        self.verbosity = verbosity
        self.slots: list[_Slot] = []
        self.ports: dict[int, int] = {}
        self._held: list[socket.socket] = []
        self._stopping = asyncio.Event()
        self._config: Config | None = None

    def pids(self) -> dict[str, int]:
        """Node name -> pid of every running worker (status, tests)."""
        return {slot.node: slot.proc.pid for slot in self.slots
                if slot.proc is not None and slot.proc.returncode is None}

    async def start(self, config: Config) -> None:
        if not (config.ocpp.enabled and config.ocpp.listeners):
            return
        from certd.ocpp import charger_registry

        self._config = config
        self._stopping = asyncio.Event()
        self.ports, self._held = reserve_ports(list(config.ocpp.listeners))
        # Chargers a one-process run (this node's plain name) held before: offline now.
        await asyncio.to_thread(charger_registry.clear_node, self._engine, node_name(config))
        self.slots = [_Slot(i, worker_node_name(config, i)) for i in range(1, config.ocpp.workers + 1)]
        for slot in self.slots:
            slot.task = asyncio.get_running_loop().create_task(
                self._supervise(slot), name=f"certd worker {slot.index}")
        waits = [asyncio.ensure_future(slot.ready.wait()) for slot in self.slots]
        _, pending = await asyncio.wait(waits, timeout=READY_TIMEOUT)
        for wait in pending:
            wait.cancel()
        ready = [slot.node for slot in self.slots if slot.ready.is_set()]
        log.info("OCPP served by %d worker process(es) sharing the listening ports: %s ready%s",
                 len(self.slots), ", ".join(ready) or "none",
                 f" ({len(pending)} still starting)" if pending else "")

    async def close(self) -> None:
        self._stopping.set()
        running = [slot.proc for slot in self.slots if slot.proc and slot.proc.returncode is None]
        for proc in running:
            _signal(proc, signal.SIGTERM)
        tasks = [slot.task for slot in self.slots if slot.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for slot in self.slots:
                if slot.proc is not None and slot.proc.returncode is None:
                    log.error("OCPP worker %s did not stop within %.0f s: killing it", slot.node, STOP_TIMEOUT)
                    _signal(slot.proc, signal.SIGKILL)
            if late:
                await asyncio.wait(late, timeout=5)
        for sock in self._held:
            sock.close()
        self._held, self.slots = [], []

    async def apply(self, old: Config, new: Config) -> None:
        """After the daemon reloaded the config: a new shape (worker count, listeners) restarts the
        pool; otherwise every worker re-reads the config file itself (SIGHUP)."""
        shape_changed = (new.ocpp.workers != old.ocpp.workers or new.ocpp.enabled != old.ocpp.enabled
                         or new.ocpp.listeners != old.ocpp.listeners)
        if shape_changed or not self.slots:
            await self.close()
            await self.start(new)
            return
        self._config = new
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                _signal(slot.proc, signal.SIGHUP)

    async def reload(self, cert_name: str | None) -> None:
        """Workers re-read their material (and the config file)."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                _signal(slot.proc, signal.SIGHUP)

    async def after_deploy(self, name: str) -> None:
        """Nothing to send: the deploy just rewrote the live copy every worker watches."""

    # -- one worker ----------------------------------------------------------------------
    async def _supervise(self, slot: _Slot) -> None:
        delay = 0.0
        while not self._stopping.is_set():
            started = time.monotonic()
            returncode = await self._run_once(slot)
            if self._stopping.is_set():
                break
            ran = time.monotonic() - started
            delay = restart_delay(delay, ran)
            slot.restarts += 1
            log.error("OCPP worker %s %s after %.1f s; restarting it in %.1f s (restart %d)",
                      slot.node, describe_exit(returncode), ran, delay, slot.restarts)
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _run_once(self, slot: _Slot) -> int | None:
        slot.ready.clear()
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(slot, theirs.fileno()), pass_fds=(theirs.fileno(),),
                env=_worker_env(slot.node))
        except OSError as exc:
            log.error("cannot start OCPP worker %s: %s", slot.node, exc.strerror or exc)
            ours.close()
            return None
        finally:
            theirs.close()
        slot.proc = proc
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        try:
            exited = asyncio.ensure_future(proc.wait())
            line = asyncio.ensure_future(reader.readline())
            await asyncio.wait({exited, line}, return_when=asyncio.FIRST_COMPLETED)
            if line.done() and line.result().startswith(b"ready"):
                slot.ready.set()
                log.info("OCPP worker %s (pid %d) is serving", slot.node, proc.pid)
            else:
                line.cancel()
            return await exited
        finally:
            writer.close()

    def _command(self, slot: _Slot, fd: int) -> list[str]:
        command = [sys.executable, "-m", "certd", "--config", str(self.config_path)]
        if self.verbosity:
            command.append("-" + "v" * self.verbosity)
        command += ["serve", "--worker", str(slot.index), "--supervisor-fd", str(fd)]
        if self.ports:
            command += ["--worker-ports", format_ports(self.ports)]
        return command


def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _worker_env(node: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in SUPERVISOR_ONLY_ENV}
    env[NODE_NAME_ENV] = node
    return env
