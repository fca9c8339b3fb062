"""One status row per configured certificate, from the store only (no network).

Shared by `certd status --json` and the HTTP server's /api/v1/status, /metrics
and status page, so they never disagree. The store is read in a handful of
bulk queries (not a few per certificate): the HTTP server builds these rows on
every scrape. Private keys are never read.

The renewal reason and time are the ones the last check recorded (ARI window
or backstop); before any check they are computed from the certificate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from certd.config import CertificateConfig, Config


@dataclass(frozen=True)
class IssuedView:
    """What the status needs of an issued certificate (no key, no PEM)."""

    id: int
    name: str
    domains: str
    key_type: str
    serial: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    issued_at: dt.datetime


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass
class StoreRows:
    """The store rows behind the status of every configured certificate, read in bulk."""

    managed: dict[str, Any]
    states: dict[str, Any]
    issued: dict[int, IssuedView]
    attempts: dict[str, Any]
    leases: dict[str, Any]
    # certificate -> node -> what that node's files and listeners carry (certd.store.deploy_state)
    per_node: dict[str, dict[str, dict[str, Any]]]


def read_rows(session: Any, names: list[str]) -> StoreRows:
    """Whole tables (one row per certificate each), not `IN (names)`: cheaper to build and to run.
    Core rows, not ORM objects: a scrape reads these every few seconds."""
    from certd.store import deploy_state
    from certd.store.leases import Lease, certificate_lease
    from certd.store.models import IssuanceAttempt, IssuedCertificate, ManagedCertificate
    from certd.store.renewal import RenewalState

    conn = session.connection()
    wanted = set(names)
    managed_t, issued_t = ManagedCertificate.__table__, IssuedCertificate.__table__  # type: ignore[attr-defined]
    attempt_t, lease_t = IssuanceAttempt.__table__, Lease.__table__  # type: ignore[attr-defined]
    managed = {r.name: r for r in conn.execute(sa.select(managed_t)) if r.name in wanted}
    states = {r.name: r for r in conn.execute(sa.select(RenewalState.__table__)) if r.name in wanted}  # type: ignore[attr-defined]
    i = issued_t.c
    issued = {row.id: IssuedView(*row) for row in conn.execute(
        sa.select(i.id, i.name, i.domains, i.key_type, i.serial, i.issuer, i.not_before, i.not_after, i.issued_at)
        .join(managed_t, managed_t.c.current_id == i.id)) if row.name in wanted}
    latest = sa.select(sa.func.max(attempt_t.c.id)).group_by(attempt_t.c.name).scalar_subquery()
    attempts = {r.name: r for r in conn.execute(sa.select(attempt_t).where(attempt_t.c.id.in_(latest)))
                if r.name in wanted}
    leases = {}
    for row in conn.execute(sa.select(lease_t).where(lease_t.c.name.like("certificate:%"))):
        name = row.name.removeprefix("certificate:")
        if name in wanted and certificate_lease(name) == row.name:
            leases[name] = row
    per_node = deploy_state.deploy_summary(list(conn.execute(sa.select(deploy_state.NodeDeploy.__table__))))  # type: ignore[attr-defined]
    return StoreRows(managed, states, issued, attempts, leases, per_node)


def certificate_row(cert_cfg: CertificateConfig, rows: StoreRows, now: dt.datetime) -> dict[str, Any]:
    """The status of one certificate (pure: store rows and a clock reading)."""
    from certd.renewal import rules

    managed = rows.managed.get(cert_cfg.name)
    state = rows.states.get(cert_cfg.name)
    issued = rows.issued.get(managed.current_id) if managed and managed.current_id else None
    attempt = rows.attempts.get(cert_cfg.name)
    ari_at = state.ari_renew_at if state and state.ari_supported else None
    decision = rules.renewal_decision(cert_cfg, issued, now, ari_renew_at=ari_at)  # type: ignore[arg-type]
    failures = managed.failure_count if managed else 0
    reason, renew_at = decision.reason, decision.renew_at
    if failures and managed and managed.renew_reason:
        # Why the failing renewal was started (the daemon also saw the files and the chain).
        reason = managed.renew_reason
    lease = rows.leases.get(cert_cfg.name)
    working = lease is not None and lease.expires_at > now
    critical = rules.is_critical(issued.not_before if issued else None,
                                 issued.not_after if issued else None, now)
    return {
        "name": cert_cfg.name,
        "domains": list(cert_cfg.domains),
        "key_type": issued.key_type if issued else cert_cfg.key_type,
        "serial": issued.serial if issued else None,
        "issuer": issued.issuer if issued else None,
        "not_after": _iso(issued.not_after) if issued else None,
        "days_left": round((issued.not_after - now).total_seconds() / 86400, 1) if issued else None,
        "renewal_due": decision.due,
        "renewal_reason": reason,
        "renew_at": _iso(renew_at),
        "ari_window_start": _iso(state.ari_window_start) if state and state.ari_supported else None,
        "ari_window_end": _iso(state.ari_window_end) if state and state.ari_supported else None,
        "ari_checked_at": _iso(managed.ari_checked_at) if managed else None,
        "next_check": _iso(managed.next_check_at) if managed else None,
        "next_attempt": _iso(managed.next_attempt_at) if managed and failures else None,
        "failures": failures,
        "last_error": managed.last_error if managed and failures else None,
        # Renewal keeps failing inside the last tenth of life (or with nothing issued at all).
        "critical": bool(failures) and critical,
        "hooks_pending": bool(managed and managed.hooks_pending),
        "deploy_failures": state.deploy_failures if state else 0,
        "last_attempt": _iso(attempt.started_at) if attempt else None,
        "last_outcome": attempt.outcome if attempt else None,
        "last_attempt_error": attempt.error if attempt else None,
        # A certd process is looking at or renewing it right now (certd.store.leases).
        "in_progress": {"by": lease.purpose, "on": lease.holder, "since": _iso(lease.acquired_at)}
        if lease is not None and working else None,
        # Per node: the issuance its own files and its listeners carry.
        "nodes": rows.per_node.get(cert_cfg.name, {}),
    }


def collect(config: Config, engine: sa.Engine, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per configured certificate, from the store only (no network)."""
    from certd.store.db import session_scope
    from certd.store.types import utcnow

    now = now or utcnow()
    with session_scope(engine) as session:
        rows = read_rows(session, [c.name for c in config.certificates])
    return [certificate_row(cert_cfg, rows, now) for cert_cfg in config.certificates]
