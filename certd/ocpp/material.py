"""Which certificate a listener serves for a configured certificate name.

This is the one place that chooses: today the current issued certificate.
A later rollover feature (serve the previous certificate until chargers hold
the new CA roots) changes only `served_certificate`.
"""

from __future__ import annotations

from sqlmodel import Session

from certd.store.models import IssuedCertificate, ManagedCertificate


def served_certificate(session: Session, name: str) -> IssuedCertificate | None:
    """The issued certificate a listener should serve for `name`, or None if none exists yet."""
    managed = session.get(ManagedCertificate, name)
    if managed is None or managed.current_id is None:
        return None
    return session.get(IssuedCertificate, managed.current_id)
