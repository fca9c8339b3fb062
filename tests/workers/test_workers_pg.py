"""`certd run` with two workers on PostgreSQL: each worker is a node of the store (listed by
`certd nodes`, what its listeners serve recorded), and a charger call is routed to the worker
that holds the charger, through the store."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

from sqlalchemy import text

from tests.workers.conftest import NODE, Box, Fleet, wait_until
from tests.workers.test_workers import run

CHARGERS = 12


def cli(box: Box, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "certd", "--config", str(box.config_path), *args],
                          env=dict(os.environ), capture_output=True, text=True, timeout=60)


def nodes(box: Box) -> dict:  # type: ignore[type-arg]
    result = cli(box, "nodes", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_workers_are_nodes_and_calls_reach_the_worker_holding_the_charger(make_box, pg_url: str) -> None:
    box: Box = make_box(workers=2, db_url=pg_url)
    box.start()
    workers = {f"{NODE}-w1", f"{NODE}-w2"}
    wait_until(lambda: workers <= {n["name"] for n in nodes(box)["nodes"] if n["state"] == "up"}, 30,
               "both workers announced as nodes")
    wait_until(lambda: all(nodes(box)["deploy"].get("web", {}).get(w, {}).get("listeners") == {"main": 1}
                           for w in workers), 60, "each worker's listeners recorded serving #1")

    async def scenario() -> dict[str, str]:
        fleet = Fleet(box.port, box.ca.root_pem)
        tasks = [asyncio.ensure_future(fleet.charger(f"CP{i:03d}")) for i in range(CHARGERS)]
        try:
            await fleet.wait_online(CHARGERS, 60)
            await asyncio.to_thread(wait_until, lambda: sum(
                n for node, n in box.nodes().items() if node) == CHARGERS, 30, "registry rows")
            with box.engine.connect() as conn:
                held = dict(conn.execute(text("SELECT charger_id, connected_node FROM charger")).all())
            answered = {}
            for worker in sorted(workers):
                charger = next(cid for cid, node in sorted(held.items()) if node == worker)
                result = await asyncio.to_thread(cli, box, "nodes", "call", charger, "GetConfiguration",
                                                 "{}", "--timeout", "20")
                assert result.returncode == 0, result.stderr
                answer = json.loads(result.stdout)
                assert answer["answer"]["configuration_key"][0]["value"] == charger
                answered[charger] = answer["node"]
            return answered
        finally:
            fleet.stop.set()
            await asyncio.wait(tasks, timeout=20)

    answered = run(scenario())
    assert sorted(answered.values()) == sorted(workers)  # each call ran on the worker holding it
    assert box.proc is not None
    box.proc.send_signal(signal.SIGTERM)
    assert box.proc.wait(60) == 0
    states = {n["name"]: n["state"] for n in nodes(box)["nodes"]}
    assert states[f"{NODE}-w1"] == states[f"{NODE}-w2"] == "stopped"
