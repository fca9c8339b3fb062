"""Nodes announce themselves in the store; the others see who is up and clean up after the gone.

Each `certd run` writes its row in `node` (name, address, version, host, process)
at start and refreshes `last_seen` every HEARTBEAT seconds; a clean stop sets
`stopped_at`. A node whose heartbeat is older than `[node] gone_after` (30 s) is
*gone*: any other node marks the chargers it held offline (their sockets died with
it; they reconnect to a node that is up, through the load balancer). Its leases
run out by themselves (certd.store.leases) and its work is taken over.

`node_states` is the pure part (rows and a clock in, states out) used by both the
heartbeat and `certd nodes`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlmodel import select

from certd import __version__
from certd.store import leases
from certd.store.chargers import Charger
from certd.store.db import session_scope
from certd.store.nodes import Node

log = logging.getLogger("certd.nodes")

HEARTBEAT = 2.0  # seconds between two `last_seen` updates (and looks at the others)
NodeStateName = Literal["up", "gone", "stopped"]


@dataclass(frozen=True)
class NodeState:
    name: str
    state: NodeStateName
    address: str | None
    version: str
    host: str
    process: str | None
    pid: int | None
    last_seen: dt.datetime
    started_at: dt.datetime


def state_of(row: Node, now: dt.datetime, gone_after: dt.timedelta) -> NodeStateName:
    if row.stopped_at is not None and row.stopped_at >= row.started_at:
        return "stopped"
    return "up" if now - row.last_seen <= gone_after else "gone"


def node_states(rows: list[Node], now: dt.datetime, gone_after: dt.timedelta) -> list[NodeState]:
    return [NodeState(r.name, state_of(r, now, gone_after), r.address, r.version, r.host, r.process, r.pid,
                      r.last_seen, r.started_at) for r in sorted(rows, key=lambda r: r.name)]


def announce(engine: sa.Engine, name: str, address: str | None, now: dt.datetime) -> None:
    """This node is up (a restart under the same name replaces the row)."""
    process = leases.this_node()
    with session_scope(engine) as session:
        row = session.get(Node, name) or Node(name=name, version=__version__, host="")
        row.address, row.version, row.host = address, __version__, socket.gethostname()
        row.pid, row.process = os.getpid(), process
        row.started_at = row.last_seen = now
        row.stopped_at = None
        session.add(row)


def heartbeat(engine: sa.Engine, name: str, now: dt.datetime) -> None:
    table = Node.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.name == name).values(last_seen=now))


def leave(engine: sa.Engine, name: str, now: dt.datetime) -> None:
    table = Node.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.name == name).values(last_seen=now, stopped_at=now))


def list_nodes(engine: sa.Engine, now: dt.datetime, gone_after: dt.timedelta) -> list[NodeState]:
    with session_scope(engine) as session:
        return node_states(list(session.exec(select(Node)).all()), now, gone_after)


def release_chargers_of_gone(engine: sa.Engine, me: str, now: dt.datetime, gone_after: dt.timedelta) -> dict[str, int]:
    """Chargers still shown on nodes that are gone or stopped are offline: their sockets died
    with the node. (A process that never announced itself, such as `certd serve`, is left
    alone.) Returns node -> chargers marked offline."""
    chargers = Charger.__table__  # type: ignore[attr-defined]
    states = {n.name: n.state for n in list_nodes(engine, now, gone_after)}
    with engine.begin() as conn:
        held = conn.execute(sa.select(chargers.c.connected_node).where(
            chargers.c.connected_node.is_not(None)).distinct()).scalars().all()
        released: dict[str, int] = {}
        for node in held:
            if node == me or states.get(node, "up") == "up":
                continue
            count = conn.execute(sa.update(chargers).where(chargers.c.connected_node == node)
                                 .values(connected_node=None, connected_since=None)).rowcount
            if count:
                released[node] = int(count)
    for node, count in released.items():
        log.warning("node %s is %s: marked the %d charger(s) it held offline", node,
                    states.get(node, "unknown"), count)
    return released


def reclaim_chargers(engine: sa.Engine, me: str, charger_ids: list[str], now: dt.datetime) -> int:
    """Chargers connected to this node that the store shows offline (another node took this one
    for gone while it was stalled) are shown on it again. Returns how many."""
    chargers = Charger.__table__  # type: ignore[attr-defined]
    fixed = 0
    with engine.begin() as conn:
        for start in range(0, len(charger_ids), 500):
            fixed += int(conn.execute(sa.update(chargers).where(
                chargers.c.charger_id.in_(charger_ids[start:start + 500]), chargers.c.connected_node.is_(None))
                .values(connected_node=me, connected_since=now)).rowcount or 0)
    if fixed:
        log.warning("node %s: %d connected charger(s) were shown offline; shown on this node again", me, fixed)
    return fixed


def holders(engine: sa.Engine, now: dt.datetime) -> dict[tuple[str | None, int | None], list[str]]:
    """(process, pid) -> names of the live leases held there, to show what each node works on."""
    table = leases.Lease.__table__  # type: ignore[attr-defined]
    found: dict[tuple[str | None, int | None], list[str]] = {}
    with engine.connect() as conn:
        for row in conn.execute(sa.select(table.c.name, table.c.node, table.c.pid).where(
                table.c.expires_at >= now).order_by(table.c.name)):
            found.setdefault((row.node, row.pid), []).append(row.name)
    return found
