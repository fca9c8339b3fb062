"""The status page's charger list: searched and paged in the database (fast with 10,000 chargers).

Never selects the password hash. The search matches id, vendor, model and
serial number as substrings; `%` and `_` in the query are literal.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

MAX_QUERY = 64


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def clean_query(text: str | None) -> str:
    return (text or "").strip()[:MAX_QUERY]


def page_number(text: str | None) -> int:
    try:
        return max(1, int(text or 1))
    except ValueError:
        return 1


def _matches(engine: sa.Engine, columns: tuple[Any, ...], query: str) -> Any:
    """Case-insensitive substring match on any of `columns`. SQLite's LIKE already ignores ASCII
    case (ILIKE would wrap every value in lower()); PostgreSQL has ILIKE."""
    if not query:
        return sa.true()
    pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if engine.dialect.name == "sqlite":
        return sa.or_(*(column.like(pattern, escape="\\") for column in columns))
    return sa.or_(*(column.ilike(pattern, escape="\\") for column in columns))


def charger_page(engine: sa.Engine, query: str, page: int, size: int) -> dict[str, Any]:
    """One page of chargers matching `query` (worker thread): a count over the charger table alone,
    then the page joined with the rollover rows."""
    from certd.store.chargers import Charger as C
    from certd.store.db import session_scope
    from certd.store.rollover import RolloverCharger as R

    condition = _matches(engine, (C.charger_id, C.vendor, C.model, C.serial_number), query)
    with session_scope(engine) as session:
        conn = session.connection()
        total = conn.execute(sa.select(sa.func.count()).select_from(C).where(condition)).scalar_one()
        pages = max(1, -(-total // size))
        page = min(page, pages)
        rows = conn.execute(
            sa.select(C.charger_id, C.enabled, C.registration, C.ocpp_version, C.vendor, C.model,  # type: ignore[call-overload]
                      C.firmware_version, C.heartbeat_class, C.connected_node, C.connected_since,
                      C.last_seen, R.state.label("rollover_state"), R.listener.label("listener"))
            .join(R, R.charger_id == C.charger_id, isouter=True).where(condition)
            .order_by(C.charger_id).offset((page - 1) * size).limit(size)).all()
    return {"query": query, "page": page, "pages": pages, "total": total, "size": size, "rows": [{
        "charger_id": r.charger_id, "enabled": r.enabled, "registration": r.registration,
        "version": r.ocpp_version, "vendor": r.vendor, "model": r.model, "firmware": r.firmware_version,
        "heartbeat_class": r.heartbeat_class, "connected": r.connected_node is not None,
        "node": r.connected_node, "connected_since": _iso(r.connected_since), "last_seen": _iso(r.last_seen),
        "listener": r.listener, "rollover": r.rollover_state,
    } for r in rows]}
