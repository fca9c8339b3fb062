"""Decide every gate against the store: which issuance each gated listener serves, what chargers need.

Synchronous (SQLAlchemy); the engine runs these in a worker thread. They write
the store and return what they decided (`Evaluation`): the engine's loop applies
it to its own memory. Decisions themselves are `certd.rollover.gates`'.

For each gated (listener, certificate) pair a `rollover_gate` row says what the
listener serves. A newer issuance whose chain ends at roots the served one does
not use is held back until enough of the listener's chargers confirmed those
roots, or until the served certificate's last days begin (then it switches anyway:
a forced switch).

Several nodes share the gates: each counts the confirmations every node recorded
(`rollover_charger` rows), and on PostgreSQL one evaluation runs at a time across
all nodes (a transaction-level advisory lock), so two nodes never decide one gate
from two different readings. A gate row that changes wakes every node (NOTIFY
trigger): their listeners switch at once and their engines provision anew.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlmodel import Session, select

from certd.config import Config
from certd.rollover import gates as rules
from certd.rollover.gate_store import (
    GateSpec, KnownCerts, bundle_target, chain_roots, charger_view, gate_priority, listener_chargers,
)
from certd.rollover.gates import Identity
from certd.rollover.plans import ListenerPlan
from certd.store.db import session_scope
from certd.store.models import IssuedCertificate, ManagedCertificate
from certd.store.rollover import GATE_BLOCKED, GATE_IDLE, GATE_PENDING, RolloverGate
from certd.trust.certs import CaCert

log = logging.getLogger("certd.rollover")

GATES_LOCK = 0x63657274_64676174  # "certdgat": the advisory lock key of gate evaluations


@dataclass(frozen=True)
class GateReport:
    """What one evaluation did to one gate."""

    listener: str
    cert_name: str
    state: str
    switched: bool = False
    forced: bool = False
    reason: str | None = None
    decision: rules.GateDecision | None = None
    served_id: int | None = None


@dataclass(frozen=True)
class Evaluation:
    """One pass over every gate: the reports, and the listeners' plans as they stand now."""

    reports: tuple[GateReport, ...]
    plans: dict[str, ListenerPlan]

    @property
    def any_pending(self) -> bool:
        """Some gate waits for chargers: a finished provisioning attempt may open it."""
        return any(r.state in (GATE_PENDING, GATE_BLOCKED) for r in self.reports)


def release_ungated(engine: sa.Engine, specs: Sequence[GateSpec]) -> None:
    """Gate rows of pairs no longer gated are deleted: the listener serves the current certificate."""
    wanted = {(s.listener, s.cert_name) for s in specs}
    with session_scope(engine) as session:
        for gate in session.exec(select(RolloverGate)).all():
            if (gate.listener, gate.cert_name) not in wanted:
                log.info("listener %s: certificate %s is no longer gated; serving the current one",
                         gate.listener, gate.cert_name)
                session.delete(gate)


def evaluate_gates(engine: sa.Engine, config: Config, specs: Sequence[GateSpec], known_certs: KnownCerts,
                   now: dt.datetime, live: set[str]) -> Evaluation:
    """Decide every gate now (`live`: chargers connected to this process)."""
    with session_scope(engine) as session:
        if engine.dialect.name == "postgresql":  # one evaluation at a time on all nodes
            waiting = time.monotonic()
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(GATES_LOCK)))
            now += dt.timedelta(seconds=time.monotonic() - waiting)  # the clock ran on meanwhile
        return _Pass(session, config, specs, known_certs.refresh(session), now, live).run()


@dataclass
class _PlanBuilder:
    label: str
    gsm: bool
    targets: dict[str, int] = field(default_factory=dict)
    members: list[CaCert] = field(default_factory=list)
    priority: frozenset[Identity] = frozenset()

    def build(self) -> ListenerPlan:
        return ListenerPlan(self.label, self.gsm, dict(self.targets), tuple(self.members), self.priority,
                            rules.needed_roots(self.members, self.priority))


class _Pass:
    """One evaluation in one store session (lives in the worker thread that runs it)."""

    def __init__(self, session: Session, config: Config, specs: Sequence[GateSpec],
                 known: dict[str, CaCert], now: dt.datetime, live: set[str]) -> None:
        self.session, self.config, self.specs = session, config, specs
        self.known, self.now, self.live = known, now, live
        self.gated_labels = {s.listener for s in specs}

    def run(self) -> Evaluation:
        reports: list[GateReport] = []
        builders: dict[str, _PlanBuilder] = {}
        for spec in self.specs:
            gate = self.session.get(RolloverGate, (spec.listener, spec.cert_name))
            if gate is None:
                gate = RolloverGate(listener=spec.listener, cert_name=spec.cert_name)
                managed = self.session.get(ManagedCertificate, spec.cert_name)
                current = managed.current_id if managed else None
                gate.served_id = gate.decided_id = current  # what is served now stays served
                self.session.add(gate)
            gate.bundle, gate.gate_share, gate.deadline_days = spec.bundle, spec.gate_share, spec.deadline_days
            reports.append(self._gate(spec, gate))
            gate.updated_at = self.now
            self.session.add(gate)
            self.session.flush()
            self._add_to_plan(builders.setdefault(spec.listener, _PlanBuilder(spec.listener, spec.gsm)),
                              spec, gate)
        return Evaluation(tuple(reports), {label: b.build() for label, b in builders.items()})

    def _add_to_plan(self, plan: _PlanBuilder, spec: GateSpec, gate: RolloverGate) -> None:
        target = bundle_target(self.session, spec.bundle, self.config.rollover.flavour, self.known)
        if target is not None:
            plan.targets[spec.bundle] = target.seq
            have = {c.fingerprint for c in plan.members}
            plan.members.extend(c for c in target.members if c.fingerprint not in have)
        plan.priority |= gate_priority(self.session, self.config, spec.bundle, gate, self.known)

    def _gate(self, spec: GateSpec, gate: RolloverGate) -> GateReport:
        managed = self.session.get(ManagedCertificate, spec.cert_name)
        current_id = managed.current_id if managed else None
        if current_id is not None and gate.decided_id != current_id:
            if current_id == gate.served_id:
                _settle(gate, GATE_IDLE, None)
                gate.decided_id = current_id
            else:
                switched = self._new_issuance(spec, gate, current_id)
                if switched is not None:
                    return switched
        if gate.state == GATE_BLOCKED and gate.pending_id is not None:
            switched = self._retry_blocked(spec, gate)
            if switched is not None:
                return switched
        if gate.state not in (GATE_PENDING, GATE_BLOCKED):
            return GateReport(spec.listener, spec.cert_name, gate.state, served_id=gate.served_id)
        views = self._views(spec)
        if gate.state == GATE_BLOCKED:
            decision = rules.blocked_gate(gate.reason or "roots unknown", views,
                                          deadline_at=gate.deadline_at, now=self.now, bundle=spec.bundle)
        else:
            required = frozenset(Identity.from_json(d) for d in json.loads(gate.required_json or "[]"))
            decision = rules.decide_gate(required, views, gate_share=spec.gate_share,
                                         deadline_at=gate.deadline_at, now=self.now, bundle=spec.bundle)
        if not decision.switch:
            return GateReport(spec.listener, spec.cert_name, gate.state, reason=decision.reason,
                              decision=decision, served_id=gate.served_id)
        new_id = gate.pending_id
        _switch(gate, new_id, decision.reason, decision.forced, decision.lacking, self.now)
        return GateReport(spec.listener, spec.cert_name, gate.state, True, decision.forced,
                          decision.reason, decision, new_id)

    def _new_issuance(self, spec: GateSpec, gate: RolloverGate, current_id: int) -> GateReport | None:
        pending_roots, problem = chain_roots(self.session, self.config, spec.bundle, current_id)
        gate.decided_id = current_id
        gate.started_at = self.now
        return self._hold_back(spec, gate, current_id, pending_roots, problem)

    def _retry_blocked(self, spec: GateSpec, gate: RolloverGate) -> GateReport | None:
        """Work out a blocked gate's roots again: the operator may have fixed the anchor set
        since (as the block's error tells them); then the gate waits for chargers or opens."""
        assert gate.pending_id is not None
        pending_roots, _ = chain_roots(self.session, self.config, spec.bundle, gate.pending_id)
        if pending_roots is None:
            return None  # still unknown; the reason logged when it blocked still holds
        log.info("listener %s: the roots of %s issuance #%s are known now", spec.listener,
                 spec.cert_name, gate.pending_id)
        return self._hold_back(spec, gate, gate.pending_id, pending_roots, None)

    def _hold_back(self, spec: GateSpec, gate: RolloverGate, pending_id: int,
                   pending_roots: frozenset[Identity] | None, problem: str | None) -> GateReport | None:
        """Serve issuance `pending_id` now, or make the gate wait for it (pending or blocked)."""
        session = self.session
        served = session.get(IssuedCertificate, gate.served_id) if gate.served_id is not None else None
        served_roots = None
        if served is not None:
            served_roots, _ = chain_roots(session, self.config, spec.bundle, served.id)
        decision = rules.on_new_issuance(
            served_id=served.id if served else None, served_not_after=served.not_after if served else None,
            pending_roots=pending_roots, served_roots=served_roots, deadline_days=spec.deadline_days,
            now=self.now, unresolved=problem)
        if decision.action == "release":
            _switch(gate, pending_id, decision.reason, False, (), self.now)
            return GateReport(spec.listener, spec.cert_name, gate.state, True, False, decision.reason,
                              served_id=pending_id)
        gate.pending_id = pending_id
        gate.state = GATE_PENDING if decision.action == "hold" else GATE_BLOCKED
        gate.required_json = json.dumps([i.to_json() for i in sorted(decision.required)])
        gate.reason = decision.reason
        gate.deadline_at = decision.deadline_at
        log.info("listener %s: keeps serving %s issuance #%s; issuance #%s waits: %s (deadline %s)",
                 spec.listener, spec.cert_name, gate.served_id, pending_id, decision.reason,
                 f"{decision.deadline_at:%Y-%m-%d %H:%M} UTC" if decision.deadline_at else "none")
        if decision.action == "block":
            log.error("listener %s: %s", spec.listener, decision.reason)
        return None

    def _views(self, spec: GateSpec) -> list[rules.ChargerView]:
        rows = listener_chargers(self.session, spec.listener, self.gated_labels)
        return [charger_view(r, self.known, r.charger.charger_id in self.live or r.charger.connected_node is not None,
                             spec.gsm) for r in rows]


def _settle(gate: RolloverGate, state: str, reason: str | None) -> None:
    gate.state, gate.reason, gate.pending_id, gate.required_json = state, reason, None, "[]"


def _switch(gate: RolloverGate, new_id: int | None, reason: str, forced: bool,
            lacking: tuple[rules.Lacking, ...], now: dt.datetime) -> None:
    gate.served_id = new_id
    _settle(gate, GATE_IDLE, None)
    gate.switched_at, gate.switch_reason, gate.forced = now, reason, forced
    gate.lacking_json = json.dumps([{"charger_id": item.charger_id, "reason": item.reason}
                                    for item in lacking])
    gate.deadline_at = None
