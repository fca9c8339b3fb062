"""OCPP requests for a charger connected to another node, routed through the store.

Behind a TCP load balancer a charger's socket is on whichever node it landed on
(`charger.connected_node`). Whoever wants to send it a request (a CLI command, a
node) writes a `charger_call` row addressed to that node; the row's trigger NOTIFYs
the node, which claims the row, sends the request over the live socket and writes the
answer (or the error) back; the requester waits for that row (NOTIFY `call-done`, with
a poll as the safety net). No node talks to another directly.

Payloads are the `ocpp` library's snake_case fields of the action's request; the
holder builds the request for the charger's negotiated version (certd.ocpp.calls).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import select

from certd.errors import CertdError
from certd.runtime.notify_listener import CHANNEL, conninfo, parse
from certd.store.chargers import Charger
from certd.store.db import session_scope
from certd.store.nodes import CALL_DONE, CALL_FAILED, CALL_QUEUED, CALL_RUNNING, ChargerCall
from certd.store.types import utcnow

if TYPE_CHECKING:
    from certd.ocpp.service import OcppService

log = logging.getLogger("certd.nodes")

_ACTION_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class ChargerUnreachable(CertdError):
    """The charger is not connected to any node (or its node is gone)."""


def request(engine: sa.Engine, charger_id: str, action: str, payload: dict[str, Any], *,
            requested_by: str, timeout: float = 30.0) -> int:
    """Queue a call for the node holding `charger_id`; returns the call's id."""
    if not action or not set(action) <= _ACTION_CHARS:
        raise CertdError(f"{action!r} is not an OCPP action name (letters only, e.g. GetInstalledCertificateIds)")
    with session_scope(engine) as session:
        charger = session.get(Charger, charger_id)
        if charger is None:
            raise ChargerUnreachable(f"no charger {charger_id!r} in the registry")
        if charger.connected_node is None:
            raise ChargerUnreachable(f"charger {charger_id} is not connected to any node")
        call = ChargerCall(charger_id=charger_id, node=charger.connected_node, action=action,
                           payload_json=json.dumps(payload), requested_by=requested_by, timeout=timeout)
        session.add(call)
        session.flush()
        assert call.id is not None
        return call.id


def get(engine: sa.Engine, call_id: int) -> ChargerCall:
    with session_scope(engine) as session:
        call = session.get(ChargerCall, call_id)
        if call is None:
            raise CertdError(f"charger call #{call_id} is gone from the store")
        return call


def wait(engine: sa.Engine, call_id: int, timeout: float) -> ChargerCall:
    """The finished call (done or failed), or the call as it stands after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    listen = _listener(engine)
    try:
        while True:
            call = get(engine, call_id)
            left = deadline - time.monotonic()
            if call.state in (CALL_DONE, CALL_FAILED) or left <= 0:
                return call
            if listen is None:
                time.sleep(min(0.2, left))
                continue
            for note in listen.notifies(timeout=min(1.0, left)):
                event = parse(note.payload)
                if event is not None and event["k"] == "call-done" and event.get("id") == call_id:
                    break
    finally:
        if listen is not None:
            listen.close()


def _listener(engine: sa.Engine) -> Any:
    """A LISTEN connection for `call-done` notifications (PostgreSQL), else None: poll."""
    if engine.dialect.name != "postgresql":
        return None
    import psycopg

    dsn, extra = conninfo(engine.url.render_as_string(hide_password=False))
    conn = psycopg.connect(dsn, autocommit=True, **extra)  # type: ignore[arg-type]
    conn.execute(f"LISTEN {CHANNEL}")
    return conn


def claim(engine: sa.Engine, node: str) -> list[ChargerCall]:
    """Calls queued for `node`, each claimed by one compare-and-set (never run twice)."""
    table = ChargerCall.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        queued = list(session.exec(select(ChargerCall).where(
            ChargerCall.node == node, ChargerCall.state == CALL_QUEUED).order_by(ChargerCall.id)).all())
    claimed = []
    with engine.begin() as conn:
        for call in queued:
            if conn.execute(sa.update(table).where(table.c.id == call.id, table.c.state == CALL_QUEUED)
                            .values(state=CALL_RUNNING)).rowcount == 1:
                claimed.append(call)
    return claimed


def finish(engine: sa.Engine, call_id: int, *, result: Any = None, error: str | None = None) -> None:
    table = ChargerCall.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == call_id).values(
            state=CALL_FAILED if error is not None else CALL_DONE, error=error,
            result_json=None if error is not None else json.dumps(result, default=str),
            finished_at=utcnow()))


def fail_stale(engine: sa.Engine, node: str, older_than: dt.datetime) -> int:
    """Calls this node claimed before a restart never finish: say so instead of leaving them."""
    table = ChargerCall.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        return int(conn.execute(sa.update(table).where(
            table.c.node == node, table.c.state == CALL_RUNNING, table.c.created_at < older_than)
            .values(state=CALL_FAILED, error=f"node {node} restarted while the call ran",
                    finished_at=utcnow())).rowcount or 0)


def answer_of(result: Any) -> Any:
    """The library's call_result dataclass as plain JSON-able data."""
    return dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result


async def execute(service: OcppService, call: ChargerCall) -> tuple[Any, str | None]:
    """Send one claimed call over this node's socket: (answer, None) or (None, error)."""
    from certd.ocpp.calls import call_module

    session = service.charger(call.charger_id)
    if session is None:
        return None, f"charger {call.charger_id} is no longer connected to node {call.node}"
    try:
        request_type = getattr(call_module(session.version), call.action)
        payload = request_type(**json.loads(call.payload_json or "{}"))
    except (AttributeError, TypeError, ValueError) as exc:
        return None, f"{call.action} cannot be built for {session.version}: {exc}"
    try:
        result = await session.call(payload, call.timeout)
    except TimeoutError:
        return None, f"no answer from charger {call.charger_id} within {call.timeout:g} s"
    except Exception as exc:  # noqa: BLE001 - CallErrors and closed sockets: reported to the caller
        return None, f"{type(exc).__name__}: {exc}"
    return answer_of(result), None


async def run_claimed(service: OcppService, engine: sa.Engine, node: str) -> int:
    """Claim this node's queued calls and run each in a task of its own; returns how many."""
    calls = await asyncio.to_thread(claim, engine, node)

    async def one(call: ChargerCall) -> None:
        from certd.ocpp.logsafe import printable

        answer, error = await execute(service, call)  # an error may quote the charger: escaped
        log.info("charger call #%s %s for %s (from %s): %s", call.id, call.action, call.charger_id,
                 call.requested_by, "answered" if error is None else printable(error, 300))
        await asyncio.to_thread(finish, engine, call.id, result=answer, error=error)  # type: ignore[arg-type]

    for call in calls:
        task = asyncio.get_running_loop().create_task(one(call), name=f"certd-charger-call-{call.id}")
        _running.add(task)
        task.add_done_callback(_running.discard)
    return len(calls)


_running: set[asyncio.Task[None]] = set()  # keeps the tasks referenced until they finish


async def call_anywhere(service: OcppService | None, engine: sa.Engine, charger_id: str, action: str,
                        payload: dict[str, Any], *, requested_by: str, timeout: float = 30.0) -> Any:
    """For code in a node (e.g. a trigger of the charger-certificate flow): send `action` to the
    charger over this node's socket if it is here, else route it through the store to the node
    holding it. Returns the answer as plain data; raises CertdError when it failed or timed out."""
    if service is not None and service.charger(charger_id) is not None:
        call = ChargerCall(charger_id=charger_id, node=service.node, action=action,
                           payload_json=json.dumps(payload), requested_by=requested_by, timeout=timeout)
        answer, error = await execute(service, call)
    else:
        call_id = await asyncio.to_thread(request, engine, charger_id, action, payload,
                                          requested_by=requested_by, timeout=timeout)
        call = await asyncio.to_thread(wait, engine, call_id, timeout + 5)
        if call.state not in (CALL_DONE, CALL_FAILED):
            raise CertdError(f"charger call #{call_id}: node {call.node} did not answer in time")
        answer, error = json.loads(call.result_json or "null"), call.error
    if error is not None:
        raise CertdError(f"{action} for charger {charger_id} via node {call.node}: {error}")
    return answer
