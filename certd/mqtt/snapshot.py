"""What Home Assistant is shown, read from the store in one go: a `Snapshot`.

`take_snapshot` runs in a worker thread (SQLAlchemy); what only the event loop knows
(connected chargers, what each listener serves right now) comes in as `LiveListener`s
the service gathers on the loop. The decisions (a certificate's status, days left,
when the next time-driven change happens) are pure functions below.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlmodel import func, select

from certd.config import Config
from certd.errors import CertdError
from certd.renewal import rules
from certd.store.chargers import REGISTRATION_PENDING, Charger
from certd.store.db import session_scope
from certd.store.leases import Lease, certificate_lease
from certd.store.models import IssuanceAttempt, IssuedCertificate, ManagedCertificate
from certd.store.renewal import RenewalState
from certd.store.trust import TrustBundleVersion, TrustDelivery

log = logging.getLogger("certd.mqtt")

STATUSES = ("ok", "renewing", "failing", "critical")
GATE_STATES = ("idle", "pending", "blocked", "not started", "undecided")
DAY = dt.timedelta(days=1)
# Gate progress moves as the rollover engine provisions chargers, which tells nobody: while a
# gate is pending the snapshot is taken again after this long.
GATE_RECHECK = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class LiveListener:
    """Loop-side facts about one OCPP listener."""

    connected: int
    served_not_after: tuple[dt.datetime, ...] = ()
    served_serials: tuple[str, ...] = ()


@dataclass(frozen=True)
class CertificateState:
    name: str
    domains: tuple[str, ...]
    not_after: dt.datetime | None
    days_left: int | None
    status: str  # one of STATUSES
    problem: bool
    last_error: str | None
    failures: int
    deploy_failures: int
    issuer: str | None
    serial: str | None
    renew_at: dt.datetime | None
    next_check: dt.datetime | None
    last_attempt: dt.datetime | None
    last_outcome: str | None


@dataclass(frozen=True)
class ListenerState:
    label: str
    connected: int
    served_not_after: dt.datetime | None
    served_matches_issued: bool | None  # None: files from another tool, or nothing served yet


@dataclass(frozen=True)
class BundleState:
    name: str
    version: int | None  # of the bundle's main flavour (full when built)
    flavours: Mapping[str, int]
    last_change: dt.datetime | None


@dataclass(frozen=True)
class RegistryState:
    name: str
    kind: str
    pending: int
    rejected: int


@dataclass(frozen=True)
class GateState:
    listener: str
    cert_name: str
    state: str  # one of GATE_STATES
    progress: float | None  # % of the chargers needed that confirmed the roots


@dataclass(frozen=True)
class Snapshot:
    node: str
    taken_at: dt.datetime
    certificates: tuple[CertificateState, ...] = ()
    listeners: tuple[ListenerState, ...] = ()
    pending_approvals: int | None = None  # None: no OCPP listener configured
    bundles: tuple[BundleState, ...] = ()
    registries: tuple[RegistryState, ...] = ()
    gates: tuple[GateState, ...] = ()
    next_change_at: dt.datetime | None = None  # a time-driven value changes then
    notes: tuple[str, ...] = field(default=(), compare=False)


# -- pure decisions ----------------------------------------------------------------------------

def certificate_status(*, issued: bool, expired: bool, failures: int, critical: bool, due: bool,
                       in_progress: bool) -> str:
    """ok, renewing (due, or a certd process works on it), failing, critical (failing near or
    past expiry, or expired)."""
    if expired or (failures and critical):
        return "critical"
    if failures:
        return "failing"
    if due or in_progress or not issued:
        return "renewing"
    return "ok"


def days_left(not_after: dt.datetime | None, now: dt.datetime) -> int | None:
    """Whole days until expiry (0 on the last day, negative once expired)."""
    if not_after is None:
        return None
    return math.floor((not_after - now) / DAY)


def next_day_boundary(not_after: dt.datetime, now: dt.datetime) -> dt.datetime:
    """When `days_left` next drops by one."""
    left = days_left(not_after, now)
    assert left is not None
    boundary = not_after - left * DAY
    return boundary if boundary > now else now + dt.timedelta(seconds=1)


def gate_progress(state: str, needed: int | None, confirmed: int | None) -> float | None:
    """Share of the chargers a pending gate needs that confirmed the new roots, in %."""
    if state == "idle":
        return 100.0
    if needed is None or confirmed is None:
        return None if state in ("not started", "undecided", "blocked") else 0.0
    if needed <= 0:
        return 100.0
    return round(min(100.0, 100.0 * confirmed / needed), 1)


def _earliest(*moments: dt.datetime | None, after: dt.datetime) -> dt.datetime | None:
    future = [m for m in moments if m is not None and m > after]
    return min(future) if future else None


# -- reading the store (worker thread) ---------------------------------------------------------

def _certificates(session, config: Config, now: dt.datetime) -> tuple[list[CertificateState], list]:  # type: ignore[no-untyped-def]
    states, moments = [], []
    for cert_cfg in config.certificates:
        managed = session.get(ManagedCertificate, cert_cfg.name)
        renewal = session.get(RenewalState, cert_cfg.name)
        issued = session.get(IssuedCertificate, managed.current_id) if managed and managed.current_id else None
        attempt = session.exec(select(IssuanceAttempt).where(IssuanceAttempt.name == cert_cfg.name)
                               .order_by(IssuanceAttempt.id.desc())).first()  # type: ignore[union-attr]
        ari_at = renewal.ari_renew_at if renewal and renewal.ari_supported else None
        decision = rules.renewal_decision(cert_cfg, issued, now, ari_renew_at=ari_at)
        failures = managed.failure_count if managed else 0
        lease = session.get(Lease, certificate_lease(cert_cfg.name))
        expired = issued is not None and now >= issued.not_after
        critical = rules.is_critical(issued.not_before if issued else None,
                                     issued.not_after if issued else None, now)
        deploy_failures = renewal.deploy_failures if renewal else 0
        last_error = (managed.last_error if managed and failures else None) or (
            attempt.error if attempt and attempt.outcome == "failure" and failures else None)
        states.append(CertificateState(
            name=cert_cfg.name, domains=tuple(cert_cfg.domains),
            not_after=issued.not_after if issued else None,
            days_left=days_left(issued.not_after if issued else None, now),
            status=certificate_status(issued=issued is not None, expired=expired, failures=failures,
                                      critical=critical, due=decision.due,
                                      in_progress=lease is not None and lease.expires_at > now),
            problem=bool(failures or deploy_failures or expired), last_error=last_error,
            failures=failures, deploy_failures=deploy_failures,
            issuer=issued.issuer if issued else None, serial=issued.serial if issued else None,
            renew_at=decision.renew_at, next_check=managed.next_check_at if managed else None,
            last_attempt=attempt.started_at if attempt else None,
            last_outcome=attempt.outcome if attempt else None))
        if issued is not None and not expired:
            moments += [next_day_boundary(issued.not_after, now), issued.not_after, decision.renew_at,
                        rules.alarm_time(issued.not_before, issued.not_after)]
        if lease is not None and lease.expires_at > now:
            moments.append(lease.expires_at)
    return states, moments


def _listeners(session, config: Config, live: Mapping[str, LiveListener]) -> list[ListenerState]:  # type: ignore[no-untyped-def]
    result = []
    if not config.ocpp.enabled:
        return result
    for listener in config.ocpp.listeners:
        facts = live.get(listener.label, LiveListener(0))
        matches: bool | None = None
        if listener.certificates and facts.served_serials:
            current = set()
            for name in listener.certificates:
                managed = session.get(ManagedCertificate, name)
                issued = session.get(IssuedCertificate, managed.current_id) if managed and managed.current_id else None
                if issued is not None:
                    current.add(issued.serial.lower())
            matches = bool(current) and current <= {s.lower() for s in facts.served_serials}
        result.append(ListenerState(listener.label, facts.connected,
                                    min(facts.served_not_after) if facts.served_not_after else None, matches))
    return result


def _bundles(session, config: Config) -> list[BundleState]:  # type: ignore[no-untyped-def]
    result = []
    for bundle in config.trust.bundles:
        flavours: dict[str, int] = {}
        last_change = None
        for flavour in bundle.flavours:
            latest = session.exec(select(TrustBundleVersion).where(
                TrustBundleVersion.bundle == bundle.name, TrustBundleVersion.flavour == flavour)
                .order_by(TrustBundleVersion.seq.desc())).first()  # type: ignore[attr-defined]
            if latest is not None:
                flavours[flavour] = latest.seq
                last_change = max(filter(None, (last_change, latest.created_at)))
        main = "full" if "full" in bundle.flavours else bundle.flavours[0]
        result.append(BundleState(bundle.name, flavours.get(main), flavours, last_change))
    return result


def _registries(session, config: Config) -> list[RegistryState]:  # type: ignore[no-untyped-def]
    counts: dict[tuple[str, str], int] = {
        (name, state): count for name, state, count in session.exec(
            select(TrustDelivery.registry_name, TrustDelivery.state, func.count())
            .group_by(TrustDelivery.registry_name, TrustDelivery.state)).all()}
    return [RegistryState(r.name, r.kind, counts.get((r.name, "pending"), 0), counts.get((r.name, "rejected"), 0))
            for r in config.trust.registries]


def _gates(config: Config, engine: sa.Engine, now: dt.datetime, live_ids: set[str]) -> tuple[list[GateState], list[str]]:
    if not (config.rollover.enabled and config.ocpp.enabled and config.ocpp.listeners and config.trust.bundles):
        return [], []
    from certd.rollover.gate_store import listener_status

    try:
        statuses, _notes = listener_status(config, engine, now=now, live=live_ids)
    except CertdError as exc:
        return [], [f"rollover gates not shown: {exc}"]
    gates = []
    for status in statuses:
        for gate in status.gates:
            decision = gate.gate
            gates.append(GateState(status.listener, gate.cert_name, gate.state, gate_progress(
                gate.state, decision.needed if decision else None,
                len(decision.confirmed) if decision else None)))
    return gates, []


def take_snapshot(config: Config, engine: sa.Engine, node: str, now: dt.datetime,
                  live: Mapping[str, LiveListener], live_charger_ids: set[str]) -> Snapshot:
    """Everything the entities show, at `now` (worker thread)."""
    with session_scope(engine) as session:
        certificates, moments = _certificates(session, config, now)
        listeners = _listeners(session, config, live)
        approvals = None
        if config.ocpp.enabled and config.ocpp.listeners:
            approvals = session.exec(select(func.count()).select_from(Charger).where(
                Charger.registration == REGISTRATION_PENDING, Charger.enabled == True)).one()  # noqa: E712
        bundles = _bundles(session, config)
        registries = _registries(session, config)
    gates, notes = _gates(config, engine, now, live_charger_ids)
    if any(g.state == "pending" for g in gates):
        moments.append(now + GATE_RECHECK)
    return Snapshot(node, now, tuple(certificates), tuple(listeners), approvals, tuple(bundles),
                    tuple(registries), tuple(gates), _earliest(*moments, after=now), tuple(notes))
