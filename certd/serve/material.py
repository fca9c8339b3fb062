"""Which certificate a listener serves for a configured certificate name.

This is the one place that chooses: the current issued certificate, unless the
trust rollover holds it back on this listener (a `rollover_gate` row: chargers
must first hold the roots the new chain ends at). Then the previous one is
served while it is valid and before its deadline (`certd.serve.gate_choice.served_choice`).
"""

from __future__ import annotations

import datetime as dt

from sqlmodel import Session

from certd.store.models import IssuedCertificate, ManagedCertificate
from certd.store.types import utcnow


def served_certificate(session: Session, name: str, listener: str | None = None,
                       now: dt.datetime | None = None) -> IssuedCertificate | None:
    """The issued certificate listener `listener` should serve for `name`, or None if none exists yet."""
    managed = session.get(ManagedCertificate, name)
    if managed is None or managed.current_id is None:
        return None
    current = session.get(IssuedCertificate, managed.current_id)
    if listener is None or current is None:
        return current
    from certd.store.rollover import RolloverGate
    from certd.serve.gate_choice import served_choice

    gate = session.get(RolloverGate, (listener, name))
    if gate is None or gate.served_id is None or gate.served_id == current.id:
        return current
    previous = session.get(IssuedCertificate, gate.served_id)
    choice = served_choice(
        current_id=current.id, served_id=gate.served_id,
        served_not_after=previous.not_after if previous else None, decided_id=gate.decided_id,
        deadline_at=gate.deadline_at, deadline_days=gate.deadline_days, now=now or utcnow(),
    )
    return previous if previous is not None and choice == previous.id else current
