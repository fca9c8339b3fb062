"""Chargers spread over two `certd run` nodes (as a TCP load balancer would spread them), one
PostgreSQL, through a CA change: Pebble starts over with a new root, an operator issues by hand,
each node installs the new root on the chargers connected to it, the gate counts the confirmations
of both nodes and opens, both listeners switch within 2 s, every charger reconnects under the new
root (to the other node, keeping its state: nothing installed twice), none is locked out. Then a
request for a charger is routed through the store to the node holding it, a charger disabled by
hand is dropped by its node, and a killed node's chargers are marked offline by the other."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from cryptography import x509
from sqlmodel import select

from certd.ocpp import charger_registry
from certd.sandbox.certd_config import toml_str
from certd.store.chargers import Charger
from certd.store.db import session_scope
from certd.store.rollover import CHARGER_CONFIRMED, GATE_IDLE, RolloverCharger, RolloverGate
from tests.nodes.conftest import HOST, Fleet, Notifications, wait_until
from tests.rollover.sim import SimCharger

CHARGERS = 10


def trust_section(anchors: Path) -> str:
    return f"""
[trust.anchor_sets]
pebble = {toml_str(anchors)}

[[trust.bundles]]
name = "fleet"
anchors = "pebble"

[rollover]
boot_wait = 1
check_interval = 2
call_timeout = 5
"""


def trust_current_root(fleet: Fleet, anchors: Path, roots: Path) -> x509.Certificate:
    root_pem = fleet.pebble.roots()[0]
    root = x509.load_pem_x509_certificate(root_pem.encode())
    (anchors / f"pebble-{root.serial_number:x}.pem").write_text(root_pem)
    roots.write_text("".join(p.read_text() for p in sorted(anchors.iterdir())))
    return root


def rows(fleet: Fleet) -> dict[str, RolloverCharger]:
    with session_scope(fleet.engine) as session:
        return {r.charger_id: r for r in session.exec(select(RolloverCharger)).all()}


def chargers(fleet: Fleet) -> dict[str, Charger]:
    with session_scope(fleet.engine) as session:
        return {c.charger_id: c for c in session.exec(select(Charger)).all()}


def gate(fleet: Fleet) -> RolloverGate | None:
    with session_scope(fleet.engine) as session:
        return session.get(RolloverGate, ("wallbox", "web"))


def test_chargers_on_two_nodes_through_a_ca_change(make_fleet, pg_url: str, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    fleet: Fleet = make_fleet(pg_url, 2, validity=None, listeners=True, operator=True,
                              ocpp='unknown_chargers = "accept"\ncall_timeout = 10', extra=trust_section(anchors))
    roots = tmp_path / "pebble-roots.pem"
    root_a = trust_current_root(fleet, anchors, roots)
    node_a, node_b = fleet.nodes
    for node in fleet.nodes:
        fleet.start(node, namespace=True)
    root_pem = fleet.pebble.roots()[0]
    sims = [SimCharger(f"CP{i:03d}", "ocpp1.6" if i % 2 == 0 else "ocpp2.0.1", [root_pem], HOST)
            for i in range(CHARGERS)]
    for sim in sims:
        charger_registry.insert_charger(fleet.engine, sim.charger_id, password_hash=None, heartbeat_class="default")
    first = None

    def url(sim: SimCharger, node_index: int) -> str:
        return f"wss://127.0.0.1:{fleet.nodes[node_index].port}/ocpp/{sim.charger_id}"

    async def scenario() -> None:
        nonlocal first
        await asyncio.to_thread(wait_until, lambda: fleet.current() is not None, 90, "the first issuance")
        first = fleet.current()
        await asyncio.to_thread(wait_until, lambda: all(n.served_serial() == int(first.serial, 16)
                                                        for n in fleet.nodes), 60, "both listeners serving")
        for index, sim in enumerate(sims):
            sim.start(url(sim, index % 2))  # half on each node, as the load balancer spreads them
        await until(lambda: all(s.online.is_set() for s in sims), "every charger online")
        await until(lambda: {c.connected_node for c in chargers(fleet).values()} == {"node-a", "node-b"}
                    and sum(c.connected_node == "node-a" for c in chargers(fleet).values()) == CHARGERS // 2,
                    "chargers recorded on both nodes")
        await until(lambda: len(rows(fleet)) == CHARGERS
                    and all(r.state == CHARGER_CONFIRMED for r in rows(fleet).values()), "holdings read")

        # -- the CA change ------------------------------------------------------------------
        await asyncio.to_thread(fleet.pebble.restart)
        root_b = trust_current_root(fleet, anchors, roots)
        assert root_b.subject != root_a.subject
        notes = await asyncio.to_thread(Notifications, pg_url)
        try:
            issued = await asyncio.to_thread(fleet.cli, "issue", "web", "--force")
            assert issued.returncode == 0, issued.stderr
            second = fleet.current()
            assert second is not None and second.id != first.id
            await until(lambda: all(s.holds(root_b) for s in sims), "every charger holds the new root", 60)
            await until(lambda: (g := gate(fleet)) is not None and g.served_id == second.id, "the gate to open")
            opened = time.monotonic()
            switched_at = next((at for at, e in reversed(notes.seen) if e["k"] == "gate"), opened)
            await until(lambda: all(n.served_serial() == int(second.serial, 16) for n in fleet.nodes),
                        "both listeners serving the new certificate", 10)
            assert time.monotonic() - switched_at <= 2.5  # 2 s bound + the test's own polling
        finally:
            notes.close()
        final = gate(fleet)
        assert final is not None and final.state == GATE_IDLE and not final.forced
        assert f"{CHARGERS}/{CHARGERS}" in (final.switch_reason or "")
        for sim in sims:
            assert len(sim.accepted_installs) == 1 and sim.accepted_installs[0] <= final.switched_at
            assert sim.connections == 1  # installed over the connection made under the old root
        assert all(r.state == CHARGER_CONFIRMED for r in rows(fleet).values())

        # -- every charger reconnects, to the other node this time, under the new root ----------
        for index, sim in enumerate(sims):
            sim.url = url(sim, (index + 1) % 2)
            sim.drop()
        await until(lambda: all(s.connections == 2 and s.online.is_set() for s in sims), "all reconnected")
        assert all(s.handshake_failures == 0 for s in sims)  # none locked out
        assert all(f"{s.peer_chains[-1][0].serial_number:x}" == second.serial for s in sims)
        await until(lambda: all(c.connected_node == ("node-b" if int(c.charger_id[2:]) % 2 == 0 else "node-a")
                                for c in chargers(fleet).values()), "chargers recorded on their new node")
        await asyncio.sleep(3)  # a rollover sweep on each node: nothing is due for them
        assert all(len(s.install_requests) == 1 for s in sims)  # their state moved with them

        # -- a request for a charger on another node, routed through the store -----------------
        target = sims[0]  # OCPP 1.6, now on node-b
        called = await asyncio.to_thread(fleet.cli, "nodes", "call", target.charger_id, "GetInstalledCertificateIds",
                                         json.dumps({"certificate_type": "CentralSystemRootCertificate"}))
        assert called.returncode == 0, called.stderr
        answer = json.loads(called.stdout)
        assert answer["node"] == "node-b" and answer["answer"]["status"] == "Accepted"
        assert len(answer["answer"]["certificate_hash_data"]) == 2  # roots A and B

        # -- disabled by hand on the operator's host: its node drops it at once ------------------
        victim = sims[1]
        disabled = await asyncio.to_thread(fleet.cli, "chargers", "disable", victim.charger_id)
        assert disabled.returncode == 0, disabled.stderr
        started = time.monotonic()
        await until(lambda: not victim.online.is_set(), "the disabled charger dropped", 5)
        assert time.monotonic() - started <= 2.0
        await asyncio.sleep(1)
        assert not victim.online.is_set()  # its reconnections are refused

        # -- a node killed: the other marks its chargers offline ---------------------------------
        fleet.kill(node_b)
        await until(lambda: all(c.connected_node != "node-b" for c in chargers(fleet).values()),
                    "node-b's chargers marked offline", 25)
        listed = json.loads((await asyncio.to_thread(fleet.cli, "nodes", "--json")).stdout)
        states = {n["name"]: n["state"] for n in listed["nodes"]}
        assert states == {"node-a": "up", "node-b": "gone"}
        assert listed["deploy"]["web"]["node-a"]["files"] == second.id
        assert listed["deploy"]["web"]["node-a"]["listeners"] == {"wallbox": second.id}
        for sim in sims:
            await sim.stop()

    asyncio.run(asyncio.wait_for(scenario(), 170))


async def until(predicate, what: str, limit: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    delay, deadline = 0.02, time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
