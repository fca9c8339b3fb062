"""`certd nodes [--json]`, `certd nodes call ID ACTION [JSON]`: the nodes sharing this store.

Read from the store: every node that announced itself (name, address, version,
state: up / gone / stopped, last heartbeat), the leases it holds, the chargers it
holds, and per certificate which issuance each node's files and listeners carry.
`call` sends one OCPP request to a charger through whichever node holds its socket
(routed through the store: certd.runtime.charger_calls) and prints the answer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket

from certd.cli import context
from certd.errors import CertdError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("nodes", help="nodes sharing the store, what each one deploys and holds")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_list)
    sub = parser.add_subparsers(dest="nodes_command", metavar="ACTION")
    call = sub.add_parser("call", help="send an OCPP request to a charger through the node holding it")
    call.add_argument("charger_id", metavar="ID")
    call.add_argument("action", metavar="ACTION", help="OCPP action, e.g. GetInstalledCertificateIds")
    call.add_argument("payload", metavar="JSON", nargs="?", default="{}",
                      help='the request\'s fields in snake_case, e.g. \'{"certificate_type": '
                           '"CentralSystemRootCertificate"}\' (default: {})')
    call.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds to wait (default 30)")
    call.set_defaults(func=_call)


def collect(config, engine, now: dt.datetime) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Nodes and per-certificate deploy state, as `--json` prints them."""
    from sqlmodel import select

    from certd.runtime import nodes
    from certd.runtime.cluster import deploy_summary
    from certd.store import deploy_state
    from certd.store.chargers import Charger
    from certd.store.db import session_scope

    gone_after = dt.timedelta(seconds=config.node.gone_after)
    states = nodes.list_nodes(engine, now, gone_after)
    held = nodes.holders(engine, now)
    with session_scope(engine) as session:
        chargers: dict[str, int] = {}
        for node in session.exec(select(Charger.connected_node).where(Charger.connected_node.is_not(None))):  # type: ignore[union-attr]
            chargers[node] = chargers.get(node, 0) + 1  # type: ignore[index]
    return {
        "nodes": [{
            "name": n.name, "state": n.state, "address": n.address, "version": n.version, "host": n.host,
            "last_seen": n.last_seen.isoformat(), "started_at": n.started_at.isoformat(),
            "seconds_since_seen": round((now - n.last_seen).total_seconds(), 1),
            "chargers": chargers.get(n.name, 0),
            "leases": held.get((n.process, n.pid), []) if n.state == "up" else [],
        } for n in states],
        "deploy": deploy_summary(deploy_state.all_rows(engine)),
    }


def _list(args: argparse.Namespace) -> int:
    from certd.store.types import utcnow

    config = context.load(args)
    engine = context.open_store(config)
    data = collect(config, engine, utcnow())
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    if not data["nodes"]:
        print("no node has announced itself in this store (nodes announce themselves on PostgreSQL)")
    table = [("NODE", "STATE", "ADDRESS", "VERSION", "LAST SEEN", "CHARGERS", "WORKING ON")]
    for n in data["nodes"]:
        table.append((n["name"], n["state"], n["address"] or "-", n["version"],
                      f"{n['seconds_since_seen']:g} s ago", str(n["chargers"]), ", ".join(n["leases"]) or "-"))
    lines = _columns(table) if data["nodes"] else []
    if data["deploy"]:
        lines.append("")
        rows = [("CERTIFICATE", "NODE", "FILES", "LISTENERS")]
        for cert, by_node in sorted(data["deploy"].items()):
            for node, state in sorted(by_node.items()):
                files = "-" if state["files"] is None else f"#{state['files']}"
                if state["hooks_pending"]:
                    files += " (hooks pending)"
                listeners = ", ".join(f"{label} #{issued}" for label, issued in sorted(state["listeners"].items()))
                rows.append((cert, node, files, listeners or "-"))
        lines += _columns(rows)
    print("\n".join(lines))
    return 0


def _columns(table: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]


def _call(args: argparse.Namespace) -> int:
    from certd.runtime import charger_calls
    from certd.store.nodes import CALL_DONE, CALL_FAILED

    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        raise CertdError(f"JSON payload: {exc}") from None
    if not isinstance(payload, dict):
        raise CertdError("JSON payload: give an object of the request's fields, e.g. {}")
    engine = context.open_store(context.load(args))
    call_id = charger_calls.request(engine, args.charger_id, args.action, payload,
                                    requested_by=f"certd nodes call on {socket.gethostname()}",
                                    timeout=args.timeout)
    call = charger_calls.wait(engine, call_id, args.timeout + 5)
    if call.state == CALL_DONE:
        print(json.dumps({"node": call.node, "answer": json.loads(call.result_json or "null")}, indent=2))
        return 0
    if call.state == CALL_FAILED:
        raise CertdError(f"charger call #{call.id} via node {call.node} failed: {call.error}")
    raise CertdError(f"charger call #{call.id}: node {call.node} did not answer within {args.timeout + 5:g} s "
                     f"(state {call.state})")
