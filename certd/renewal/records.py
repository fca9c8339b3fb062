"""The renewal check's rows in the store: read one certificate's state, set fields, count issuances.

Each call is one short transaction; the check itself (certd.renewal.check) decides what to write.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import select

from certd.store.db import session_scope
from certd.store.leases import Fence
from certd.store.models import IssuedCertificate, ManagedCertificate
from certd.store.renewal import RenewalState
from certd.store.types import utcnow


CREATE_ATTEMPTS = 3


def ensure_rows(engine: sa.Engine, names: list[str]) -> list[str]:
    """Create the per-certificate rows for new names; returns stored names no longer configured.

    Nodes that start together on a new store all create the same rows: the one whose insert
    loses to another's commit reads the rows again and finds them there (nothing left to add)."""
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            return _create_missing(engine, names)
        except sa.exc.IntegrityError:
            if attempt == CREATE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _create_missing(engine: sa.Engine, names: list[str]) -> list[str]:
    with session_scope(engine) as session:
        known = {m.name for m in session.exec(select(ManagedCertificate)).all()}
        for name in names:
            if name not in known:
                session.add(ManagedCertificate(name=name))
        have_state = {r.name for r in session.exec(select(RenewalState)).all()}
        for name in names:
            if name not in have_state:
                session.add(RenewalState(name=name))
    return sorted(known - set(names))


def load(engine: sa.Engine, name: str) -> tuple[ManagedCertificate, IssuedCertificate | None, RenewalState]:
    """The certificate's rows (defaults when missing), detached from the session."""
    with session_scope(engine) as session:
        managed = session.get(ManagedCertificate, name) or ManagedCertificate(name=name)
        issued = session.get(IssuedCertificate, managed.current_id) if managed.current_id else None
        renewal = session.get(RenewalState, name) or RenewalState(name=name)
        session.expunge_all()
    return managed, issued, renewal


def upsert(engine: sa.Engine, table: type[ManagedCertificate] | type[RenewalState], name: str,
           fence: Fence | None = None, **fields: object) -> None:
    """Set `fields` on the row of `name` in `table` (created if missing), in one transaction;
    with `fence`, only while the caller still holds the certificate's lease."""
    with session_scope(engine) as session:
        if fence is not None:
            fence.verify(session.connection())
        row = session.get(table, name) or table(name=name)
        for key, value in fields.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        session.add(row)


def issued_since(engine: sa.Engine, name: str, since: dt.datetime) -> int:
    """How many certificates were issued for `name` from `since` on."""
    with session_scope(engine) as session:
        return int(session.exec(
            select(sa.func.count()).select_from(IssuedCertificate)
            .where(IssuedCertificate.name == name, IssuedCertificate.issued_at >= since)
        ).one())
