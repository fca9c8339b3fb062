"""The supervisor's pure parts and the shared-port reservation, without processes."""

from __future__ import annotations

import asyncio
import signal
import socket

import pytest

from certd.config import Config
from certd.runtime import eventloop
from certd.runtime.workers import (
    BACKOFF_MAX, BACKOFF_MIN, STABLE_AFTER, describe_exit, format_ports, parse_ports,
    reserve_ports, restart_delay, worker_config, worker_node_name,
)


def config(**ocpp: object) -> Config:
    return Config.model_validate({"certificates": [{"name": "web", "domains": ["a.example.test"]}],
                                  "ocpp": {"listeners": [
                                      {"name": "fixed", "host": "a.example.test", "port": 8443,
                                       "certificates": ["web"]},
                                      {"name": "any", "host": "a.example.test", "port": 0,
                                       "bind": ["127.0.0.1"], "certificates": ["web"]},
                                  ], **ocpp}})


def test_each_worker_is_its_own_node_and_gets_the_pool_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERTD_NODE_NAME", raising=False)
    base = config(node_name="box", workers=3)
    assert [worker_node_name(base, i) for i in (1, 2, 3)] == ["box-w1", "box-w2", "box-w3"]
    named = Config.model_validate({**base.model_dump(), "node": {"name": "node-a"}})
    assert worker_node_name(named, 2) == "node-a-w2"  # [node] name wins over [ocpp] node_name
    monkeypatch.setenv("CERTD_NODE_NAME", "from-env")
    assert worker_node_name(base, 1) == "from-env-w1"
    mine = worker_config(base, {1: 41234})
    assert [listener.port for listener in mine.ocpp.listeners] == [8443, 41234]
    assert base.ocpp.listeners[1].port == 0  # untouched
    assert Config().ocpp.workers == 1


def test_restart_delay_grows_while_a_worker_keeps_dying_and_resets_once_it_ran() -> None:
    delays, delay = [], 0.0
    for _ in range(8):
        delay = restart_delay(delay, ran_seconds=0.3)
        delays.append(delay)
    assert delays[0] == BACKOFF_MIN and delays == sorted(delays) and delays[-1] == BACKOFF_MAX
    assert restart_delay(BACKOFF_MAX, ran_seconds=STABLE_AFTER) == BACKOFF_MIN


def test_exit_descriptions_and_port_lists() -> None:
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(None) == "could not be started"
    assert parse_ports(format_ports({0: 41234, 2: 41236})) == {0: 41234, 2: 41236}
    assert parse_ports(None) == {}


def test_reserved_port_is_shared_by_reuse_port_listeners() -> None:
    """The held socket never listens: connections land only on the listeners that bind it."""
    ports, held = reserve_ports(list(config().ocpp.listeners))
    assert list(ports) == [1] and len(held) == 1
    port = ports[1]

    async def scenario() -> list[int]:
        hits = [0, 0]

        def handler(index: int):  # type: ignore[no-untyped-def]
            async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                hits[index] += 1
                writer.close()
            return on_connect

        servers = [await asyncio.start_server(handler(i), "127.0.0.1", port, reuse_port=True)
                   for i in range(2)]
        for _ in range(64):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.read()
            writer.close()
        for server in servers:
            server.close()
            await server.wait_closed()
        return hits

    try:
        hits = eventloop.run(scenario())
    finally:
        for sock in held:
            sock.close()
    assert sum(hits) == 64 and min(hits) > 0
    with socket.socket() as probe:  # released with the pool (TIME_WAIT entries aside)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
