"""Store side of the trust rollover: which listeners are gated, what chargers hold, status views.

Synchronous (SQLAlchemy); the rollover engine calls these in worker threads,
`certd fleet status` directly. Decisions stay in `certd.rollover.gates`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlmodel import Session, select

from certd.config import Config
from certd.config.rollover import rollover_config_errors
from certd.errors import ConfigError
from certd.store.chargers import Charger
from certd.store.db import session_scope
from certd.store.models import IssuedCertificate, ManagedCertificate
from certd.store.rollover import (
    CHARGER_CONFIRMED, GATE_PENDING, RolloverCharger, RolloverGate,
)
from certd.store.trust import TrustCaCertificate, TrustChainLink
from certd.trust import TrustError
from certd.rollover import gates as rules
from certd.trust import versions
from certd.trust.certs import CaCert, parse_one
from certd.trust.chains import ROOT
from certd.rollover.gates import ChargerView, Identity, identity_of


@dataclass(frozen=True)
class GateSpec:
    """One gated (listener, certificate name) pair, as the config says."""

    listener: str
    cert_name: str
    bundle: str
    gate_share: float
    deadline_days: float
    gsm: bool  # the listener speaks the gsm TLS profile (cellular modules)


def gate_specs(config: Config) -> tuple[list[GateSpec], list[str]]:
    """Every gated pair, and notes about listeners that cannot be gated (no bundle covers them).

    Raises ConfigError (with key paths) for overrides naming unknown listeners
    or bundles, and for a certificate covered by several bundles with none chosen.
    """
    from certd.trust.track import bundles_covering

    labels = [listener.label for listener in config.ocpp.listeners]
    errors = rollover_config_errors(config.rollover, labels, [b.name for b in config.trust.bundles])
    specs: list[GateSpec] = []
    notes: list[str] = []
    if not errors and config.rollover.enabled and config.ocpp.enabled:
        for index, listener in enumerate(config.ocpp.listeners):
            if listener.insecure or not listener.certificates:
                continue
            settings = config.rollover.for_listener(listener.label)
            if not settings.enabled:
                continue
            for name in listener.certificates:
                if settings.bundle is not None:
                    bundle = settings.bundle
                else:
                    covering = [b.name for b in bundles_covering(config, name)]
                    if not covering:
                        notes.append(
                            f"listener {listener.label}: no [[trust.bundles]] entry covers certificate "
                            f"{name}, so chargers are not given its roots and new issuances are "
                            "served at once")
                        continue
                    if len(covering) > 1:
                        errors.append(
                            f"ocpp.listeners[{index}] ({listener.label}): certificate {name} is covered "
                            f"by bundles {', '.join(covering)}; choose one with [[rollover.listeners]] "
                            f"listener = \"{listener.label}\", bundle = \"...\"")
                        continue
                    bundle = covering[0]
                specs.append(GateSpec(listener.label, name, bundle, settings.gate_share,
                                      settings.deadline_days, listener.tls_profile == "gsm"))
    if errors:
        raise ConfigError("invalid configuration\n  " + "\n  ".join(errors))
    return specs, notes


# -- certificates ------------------------------------------------------------------------------

class KnownCerts:
    """Every CA certificate the store knows (chains and anchors), parsed once per content.

    A cache for worker threads (several at once): its lock guards the dict, not the queries."""

    def __init__(self) -> None:
        self._by_fp: dict[str, CaCert] = {}
        self._lock = threading.Lock()

    def refresh(self, session: Session) -> dict[str, CaCert]:
        fingerprints = set(session.exec(select(TrustCaCertificate.fingerprint)).all())
        with self._lock:
            missing = fingerprints - set(self._by_fp)
        if missing:
            parsed = {row.fingerprint: parse_one(row.pem, f"stored CA {row.fingerprint[:16]}")
                      for row in session.exec(select(TrustCaCertificate).where(
                          TrustCaCertificate.fingerprint.in_(missing))).all()}  # type: ignore[attr-defined]
            with self._lock:
                self._by_fp.update(parsed)
        with self._lock:
            return dict(self._by_fp)


def chain_roots(session: Session, config: Config, bundle_name: str,
                issued_id: int) -> tuple[frozenset[Identity] | None, str | None]:
    """The roots the served chain of issuance `issued_id` ends at (recorded first if needed)."""
    from certd.trust.anchors import anchor_set
    from certd.trust.track import record_chains

    issued = session.get(IssuedCertificate, issued_id)
    if issued is None:
        return None, f"issuance #{issued_id} is not in the store"
    try:
        bundle = config.trust.bundle(bundle_name)
        anchors = anchor_set(config.trust, bundle.anchors)
        warnings: list[str] = []
        links = record_chains(session, issued, anchors, warnings)
    except (TrustError, ConfigError) as exc:
        return None, str(exc)
    roots = frozenset(identity_of(link.cert) for link in links[0] if link.role == ROOT and link.in_path)
    return (roots or None), (None if roots else "the chain reaches no root")


def recorded_roots(session: Session, bundle_anchor_set: str, issued_id: int,
                   known: dict[str, CaCert]) -> frozenset[Identity]:
    """Roots of an issuance's served chain from recorded links only (no writes)."""
    rows = session.exec(select(TrustChainLink).where(
        TrustChainLink.issued_id == issued_id, TrustChainLink.anchor_set == bundle_anchor_set,
        TrustChainLink.chain_index == 0, TrustChainLink.role == ROOT)).all()
    return frozenset(identity_of(known[r.fingerprint]) for r in rows if r.fingerprint in known)


def gate_priority(session: Session, config: Config, bundle: str, gate: RolloverGate | None,
                  known: dict[str, CaCert]) -> frozenset[Identity]:
    """The roots one gate needs chargers to hold now: the pending issuance's new roots while
    it waits, else the served chain's roots (the engine and `certd fleet status` agree on it)."""
    if gate is None:
        return frozenset()
    if gate.state == GATE_PENDING:
        required = _loads(gate.required_json, [])
        return frozenset(Identity.from_json(d) for d in required) if isinstance(required, list) else frozenset()
    if gate.served_id is None:
        return frozenset()
    return recorded_roots(session, config.trust.bundle(bundle).anchors, gate.served_id, known)


@dataclass(frozen=True)
class BundleTarget:
    bundle: str
    seq: int
    members: tuple[CaCert, ...]


def bundle_target(session: Session, bundle: str, flavour: str,
                  known: dict[str, CaCert]) -> BundleTarget | None:
    """The latest version of a bundle flavour with its member certificates (None: no version yet)."""
    latest = versions.latest(session, bundle, flavour)
    if latest is None:
        return None
    members = tuple(known[s.fingerprint] for s in versions.members(latest) if s.fingerprint in known)
    return BundleTarget(bundle, latest.seq, members)


# -- chargers --------------------------------------------------------------------------------

def _loads(text: str | None, default: object) -> object:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def held_fingerprints(row: RolloverCharger | None) -> list[str]:
    value = _loads(row.held_json if row else None, [])
    return [str(v) for v in value] if isinstance(value, list) else []


def held_bundles(row: RolloverCharger | None) -> dict[str, int]:
    value = _loads(row.bundles_json if row else None, {})
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}


def held_roots(row: RolloverCharger | None, known: dict[str, CaCert]) -> frozenset[Identity]:
    """Identities of the known certificates the charger last reported holding."""
    return frozenset(identity_of(known[fp]) for fp in held_fingerprints(row) if fp in known)


@dataclass(frozen=True)
class ChargerRow:
    """A registered charger joined with its rollover row (None: never provisioned)."""

    charger: Charger
    rollover: RolloverCharger | None


def listener_chargers(session: Session, label: str, gated_labels: Iterable[str]) -> list[ChargerRow]:
    """Registered chargers counted for a listener: those last seen on it, and those never seen
    on any listener (what they trust is unknown, so every gated listener counts them)."""
    del gated_labels  # chargers seen on any other listener, gated or not, belong to that one
    rows = session.exec(select(Charger, RolloverCharger).join(
        RolloverCharger, RolloverCharger.charger_id == Charger.charger_id, isouter=True)).all()
    result = []
    for charger, rollover in rows:
        seen_on = rollover.listener if rollover is not None else None
        if seen_on == label or seen_on is None:
            result.append(ChargerRow(charger, rollover))
    return result


def charger_view(row: ChargerRow, known: dict[str, CaCert], online: bool, gsm_listener: bool,
                 targets: dict[str, int] | None = None,
                 needed: frozenset[Identity] = frozenset()) -> ChargerView:
    """The gate's view of one charger; `targets` (bundle -> seq) and `needed` (priority roots,
    see `rules.needed_roots`) decide whether "confirmed" is current."""
    rollover = row.rollover
    held = held_roots(rollover, known)
    state = rollover.state if rollover is not None else None
    if state == CHARGER_CONFIRMED and targets:
        if not rules.plan_covered(held_bundles(rollover), held, targets, needed):
            state = "pending"  # confirmed an older version, or lacks the roots needed now
    return ChargerView(
        charger_id=row.charger.charger_id, enabled=row.charger.enabled, online=online, held=held,
        state=state, last_result=rollover.last_result if rollover else None,
        last_reason=rollover.last_reason if rollover else None, last_seen=row.charger.last_seen,
        gsm=gsm_listener or row.charger.heartbeat_class == "gsm",
    )


# -- status (certd fleet status) ---------------------------------------------------------------

@dataclass(frozen=True)
class IssuedSummary:
    id: int
    serial: str
    issuer: str
    not_after: dt.datetime

    def line(self) -> str:
        return f"#{self.id} serial {self.serial} from {self.issuer}, valid until {self.not_after:%Y-%m-%d %H:%M} UTC"


@dataclass(frozen=True)
class GateStatus:
    cert_name: str
    bundle: str
    state: str
    served: IssuedSummary | None
    pending: IssuedSummary | None
    reason: str | None
    required: tuple[str, ...]
    deadline_at: dt.datetime | None
    switched_at: dt.datetime | None
    switch_reason: str | None
    forced: bool
    gate: rules.GateDecision | None = None


@dataclass
class ListenerStatus:
    listener: str
    gsm: bool
    gates: list[GateStatus] = field(default_factory=list)
    bundles: dict[str, int] = field(default_factory=dict)  # bundle -> latest version
    counts: dict[str, int] = field(default_factory=lambda: {b: 0 for b in
                                                            ("confirmed", "pending", "failed", "offline")})
    chargers: list[tuple[ChargerView, str, str]] = field(default_factory=list)  # view, bucket, reason


def _summary(session: Session, issued_id: int | None) -> IssuedSummary | None:
    if issued_id is None:
        return None
    row = session.get(IssuedCertificate, issued_id)
    if row is None:
        return None
    return IssuedSummary(issued_id, row.serial, row.issuer, row.not_after)


def listener_status(config: Config, engine: sa.Engine, *, now: dt.datetime,
                    live: set[str] | None = None) -> tuple[list[ListenerStatus], list[str]]:
    """Per gated listener: served / pending certificate, bundle version, chargers by bucket."""
    specs, notes = gate_specs(config)
    gated_labels = {s.listener for s in specs}
    known_cache = KnownCerts()
    result: dict[str, ListenerStatus] = {}
    # Per listener: the bundle members and priority roots, as the engine's plan has them.
    members: dict[str, list[CaCert]] = {}
    priority: dict[str, frozenset[Identity]] = {}
    with session_scope(engine) as session:
        known = known_cache.refresh(session)
        for spec in specs:
            status = result.setdefault(spec.listener, ListenerStatus(spec.listener, spec.gsm))
            target = bundle_target(session, spec.bundle, config.rollover.flavour, known)
            if target is not None:
                status.bundles[spec.bundle] = target.seq
                members.setdefault(spec.listener, []).extend(target.members)
            gate = session.get(RolloverGate, (spec.listener, spec.cert_name))
            priority[spec.listener] = priority.get(spec.listener, frozenset()) | gate_priority(
                session, config, spec.bundle, gate, known)
            managed = session.get(ManagedCertificate, spec.cert_name)
            current_id = managed.current_id if managed else None
            if gate is None:
                status.gates.append(GateStatus(spec.cert_name, spec.bundle, "not started",
                                               _summary(session, current_id), None, None, (), None,
                                               None, None, False))
                continue
            required = tuple(Identity.from_json(d).subject for d in _loads(gate.required_json, []))  # type: ignore[union-attr]
            pending_id = gate.pending_id
            if current_id is not None and gate.decided_id != current_id and current_id != gate.served_id:
                pending_id = current_id  # issued, not looked at by a running certd yet
            status.gates.append(GateStatus(
                spec.cert_name, spec.bundle, gate.state if pending_id == gate.pending_id else "undecided",
                _summary(session, gate.served_id if gate.served_id is not None else current_id),
                _summary(session, pending_id), gate.reason, required, gate.deadline_at, gate.switched_at,
                gate.switch_reason, gate.forced))
        for label, status in result.items():
            rows = listener_chargers(session, label, gated_labels)
            needed = rules.needed_roots(members.get(label, []), priority.get(label, frozenset()))
            views = []
            for row in sorted(rows, key=lambda r: r.charger.charger_id):
                online = row.charger.connected_node is not None or (
                    live is not None and row.charger.charger_id in live)
                view = charger_view(row, known, online, status.gsm, status.bundles, needed)
                if not view.enabled:
                    continue
                views.append(view)
                kind = rules.bucket(view)
                status.counts[kind] += 1
                reason = "" if kind == "confirmed" else rules.lacking_reason(
                    view, next(iter(status.bundles), None))
                status.chargers.append((view, kind, reason))
            for index, gate_status in enumerate(status.gates):
                gate = session.get(RolloverGate, (label, gate_status.cert_name))
                if gate is None or gate.state != GATE_PENDING:
                    continue
                required_ids = frozenset(Identity.from_json(d) for d in _loads(gate.required_json, []))  # type: ignore[union-attr]
                decision = rules.decide_gate(required_ids, views, gate_share=gate.gate_share,
                                             deadline_at=gate.deadline_at, now=now, bundle=gate.bundle)
                status.gates[index] = dataclasses.replace(gate_status, gate=decision)
    return list(result.values()), notes
