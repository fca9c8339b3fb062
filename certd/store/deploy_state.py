"""Which issuance each node deployed: its own target files, hooks, and what its listeners serve.

Every node writes its own files and runs its own hooks, so "deployed" is a fact per
node (`NodeDeploy` rows), not per certificate. `ManagedCertificate.deployed_id` and
`hooks_pending` are still written (the last deploy by any node) so a store from
before several nodes, which has no `node_deploy` rows yet, reads as it did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, select

from certd.store.db import session_scope
from certd.store.models import ManagedCertificate
from certd.store.nodes import NodeDeploy
from certd.store.types import utcnow


@dataclass(frozen=True)
class Deployed:
    """This node's deploy of one certificate: the issuance its files carry, hooks still owed."""

    issued_id: int | None
    hooks_pending: bool


def _row(session: Session, node: str, name: str) -> NodeDeploy:
    """The row of (node, name), created if missing without racing a concurrent creator."""
    table = NodeDeploy.__table__  # type: ignore[attr-defined]
    values = {"node": node, "certificate": name, "hooks_pending": False, "listeners_json": "{}"}
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        session.execute(insert(table).values(**values).on_conflict_do_nothing())
    else:
        session.execute(sa.insert(table).values(**values).prefix_with("OR IGNORE"))
    row = session.get(NodeDeploy, (node, name), populate_existing=True)
    assert row is not None
    return row


def record(session: Session, node: str, name: str, issued_id: int | None, hooks_ok: bool) -> None:
    """In the caller's transaction (a fenced one when the caller holds the certificate's lease)."""
    row = _row(session, node, name)
    row.issued_id, row.hooks_pending, row.deployed_at = issued_id, not hooks_ok, utcnow()
    session.add(row)


def of_node(session: Session, node: str, name: str, managed: ManagedCertificate | None) -> Deployed:
    """What `node` deployed of `name`; before any node recorded its own deploy of `name` (a store
    from a single-node version), the certificate-wide columns speak for it."""
    row = session.get(NodeDeploy, (node, name))
    if row is not None:
        return Deployed(row.issued_id, row.hooks_pending)
    anyone = session.exec(select(NodeDeploy.node).where(NodeDeploy.certificate == name).limit(1)).first()
    if anyone is None and managed is not None:
        return Deployed(managed.deployed_id, managed.hooks_pending)
    return Deployed(None, False)


def load(engine: sa.Engine, node: str, name: str) -> Deployed:
    with session_scope(engine) as session:
        return of_node(session, node, name, session.get(ManagedCertificate, name))


def record_listeners(engine: sa.Engine, node: str, served: dict[str, dict[str, int]]) -> None:
    """`served`: certificate name -> {listener label: issued id it serves on this node}."""
    with session_scope(engine) as session:
        for name, ids in served.items():
            row = _row(session, node, name)
            if json.loads(row.listeners_json or "{}") != ids:
                row.listeners_json, row.listeners_at = json.dumps(ids, sort_keys=True), utcnow()
                session.add(row)


def all_rows(engine: sa.Engine) -> list[NodeDeploy]:
    with session_scope(engine) as session:
        return list(session.exec(select(NodeDeploy).order_by(NodeDeploy.certificate, NodeDeploy.node)))
