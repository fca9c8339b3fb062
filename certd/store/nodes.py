"""Tables of several nodes on one store: who is up, what each one deployed, calls routed to chargers.

`Node`: one row per certd node (`[node] name`), refreshed by its heartbeat; a node
whose heartbeat is older than `[node] gone_after` is gone and the others mark the
chargers it held offline. `NodeDeploy`: which issuance each node's own target files
and OCPP listeners carry (every node writes its own files and runs its own hooks).
`ChargerCall`: an OCPP request for a charger connected to another node, routed
through the store: the holder node is told by NOTIFY, runs it, writes the answer
back. On SQLite the only node is the local one and the tables stay small.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from certd.store.types import UTCDateTime, utcnow

# ChargerCall.state
CALL_QUEUED = "queued"
CALL_RUNNING = "running"
CALL_DONE = "done"  # answered: result_json holds the charger's answer
CALL_FAILED = "failed"  # error says why (offline, timeout, CallError, no node)


def _ts(nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(UTCDateTime(), nullable=nullable)


class Node(SQLModel, table=True):
    __tablename__ = "node"

    name: str = Field(sa_column=sa.Column(sa.String(100), primary_key=True))
    address: str | None = None
    version: str
    host: str  # the machine's host name: for messages only
    pid: int | None = None
    # Kernel boot + PID namespace and PID (leases.this_node()/pid): the leases it holds carry the same.
    process: str | None = None
    started_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    last_seen: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    stopped_at: dt.datetime | None = Field(default=None, sa_column=_ts())  # a clean shutdown


class NodeDeploy(SQLModel, table=True):
    """Per node and certificate: the issuance its files carry and the ones its listeners serve."""

    __tablename__ = "node_deploy"

    node: str = Field(sa_column=sa.Column(sa.String(100), primary_key=True))
    certificate: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    issued_id: int | None = None  # written to this node's targets (None: nothing yet)
    hooks_pending: bool = False  # this node's deploy hooks failed for issued_id
    deployed_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    # JSON object listener label -> issued id that listener serves on this node.
    listeners_json: str = Field(default="{}", sa_column=sa.Column(sa.Text, nullable=False))
    listeners_at: dt.datetime | None = Field(default=None, sa_column=_ts())


class ChargerCall(SQLModel, table=True):
    __tablename__ = "charger_call"

    id: int | None = Field(default=None, primary_key=True)
    charger_id: str = Field(sa_column=sa.Column(sa.String(48), nullable=False, index=True))
    node: str = Field(sa_column=sa.Column(sa.String(100), nullable=False, index=True))  # runs it
    action: str  # OCPP action, e.g. "GetInstalledCertificateIds"
    payload_json: str = Field(default="{}", sa_column=sa.Column(sa.Text, nullable=False))  # snake_case
    state: str = CALL_QUEUED
    result_json: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    requested_by: str  # "certd nodes call on HOST", a node name: for messages only
    timeout: float = 30.0
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    finished_at: dt.datetime | None = Field(default=None, sa_column=_ts())
