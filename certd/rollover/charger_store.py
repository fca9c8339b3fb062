"""Store side of provisioning one charger: read its row before an attempt, record how it ended.

Synchronous (SQLAlchemy); the engine runs these in worker threads. They write
only the store and return what the engine's loop should remember (`Memory`,
`ContextRead`, `Recorded`); the loop applies that itself (see
`certd.rollover.engine`). When to try again is `certd.rollover.policy`'s decision.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import select

from certd.rollover import gates as rules
from certd.rollover import policy
from certd.rollover.gate_store import KnownCerts, held_bundles, held_roots
from certd.rollover.hashdata import hash_index
from certd.rollover.plans import Attempt, Confirmed, HashIndex, ListenerPlan, ProvisionContext
from certd.rollover.provision import ChargerFacts
from certd.store.db import session_scope
from certd.store.rollover import CHARGER_CONFIRMED, RolloverCharger

log = logging.getLogger("certd.rollover")


@dataclass(frozen=True)
class Memory:
    """What the store says about every charger, as the engine keeps it in memory."""

    listener_of: dict[str, str | None]
    confirmed: dict[str, Confirmed]
    not_before: dict[str, dt.datetime]


def load_memory(engine: sa.Engine, known_certs: KnownCerts) -> Memory:
    """Every charger row: where it was last seen, what it confirmed, when it may be tried again."""
    memory = Memory({}, {}, {})
    with session_scope(engine) as session:
        known = known_certs.refresh(session)
        for row in session.exec(select(RolloverCharger)).all():
            memory.listener_of[row.charger_id] = row.listener
            if row.state == CHARGER_CONFIRMED:
                memory.confirmed[row.charger_id] = Confirmed(held_bundles(row), held_roots(row, known))
            if row.next_attempt_at is not None:
                memory.not_before[row.charger_id] = row.next_attempt_at
    return memory


@dataclass(frozen=True)
class ContextRead:
    """A charger's row was read (and its listener recorded): what to do, and the hash index used."""

    context: ProvisionContext | None  # None: nothing to do now
    index: HashIndex


def read_context(engine: sa.Engine, known_certs: KnownCerts, index: HashIndex, charger_id: str,
                 listener: str, version: str, plan: ListenerPlan | None, now: dt.datetime, *,
                 retry: bool, facts_stale: bool) -> ContextRead:
    """Record where the charger is; then its provisioning inputs, unless it holds what `plan`
    says or its back-off has not passed. `index` is rebuilt when the known certificates changed."""
    with session_scope(engine) as session:
        row = session.get(RolloverCharger, charger_id)
        if row is None:
            row = RolloverCharger(charger_id=charger_id)
        if row.listener != listener or row.ocpp_version != version:
            row.listener, row.ocpp_version, row.updated_at = listener, version, now
            session.add(row)
        if plan is None or not plan.targets:
            return ContextRead(None, index)  # not a gated listener, or no bundle version yet
        known = known_certs.refresh(session)
        current = row.state == CHARGER_CONFIRMED and rules.plan_covered(
            held_bundles(row), held_roots(row, known), plan.targets, plan.needed)
        if current or not policy.may_try(row.next_attempt_at, now, retry_now=retry):
            return ContextRead(None, index)
        facts = None
        if row.facts_at is not None and not facts_stale:
            facts = ChargerFacts(row.store_max, row.store_used, row.additional_root_check)
    key = tuple(sorted(known))
    if key != index.key:
        index = HashIndex(key, hash_index(known.values()))
    return ContextRead(ProvisionContext(plan, known, index.index, facts), index)


@dataclass(frozen=True)
class Recorded:
    """The charger's row after an attempt, as the engine remembers it."""

    confirmed: Confirmed | None  # None: it does not hold the plan (any more)
    not_before: dt.datetime | None  # None: it may be tried whenever it is due


def record_attempt(engine: sa.Engine, charger_id: str, plan: ListenerPlan, facts: ChargerFacts,
                   answered: bool | None, attempt: Attempt, now: dt.datetime,
                   retry_after: float) -> Recorded:
    """Store how an attempt ended. `answered`: None when the stored facts were used, else whether
    the charger answered the facts query just now (not answered: ask again next time)."""
    outcome = attempt.outcome
    confirmed = None
    with session_scope(engine) as session:
        row = session.get(RolloverCharger, charger_id) or RolloverCharger(charger_id=charger_id)
        row.listener = plan.label
        if answered:
            row.store_max, row.store_used = facts.store_max, facts.store_used
            row.additional_root_check, row.facts_at = facts.additional_root_check, now
        if answered is False or attempt.refused:
            row.facts_at = None  # ask the charger again next time
        if attempt.held_fps is not None:
            row.held_json = json.dumps(sorted(attempt.held_fps))
            row.other_held = attempt.unknown
        row.installs_sent += attempt.sent
        row.last_attempt_at, row.updated_at = now, now
        row.last_result, row.last_reason = outcome, attempt.reason
        next_try = policy.after_attempt(outcome, row.failures, now, retry_after)
        row.state, row.failures, row.next_attempt_at = next_try.state, next_try.failures, next_try.next_attempt_at
        if outcome == "Accepted":
            row.confirmed_at = now
            bundles = {**held_bundles(row), **plan.targets}
            row.bundles_json = json.dumps(bundles, sort_keys=True)
            confirmed = Confirmed(bundles, attempt.held_ids)
        session.add(row)
    if outcome == "Accepted":
        log.info("charger %s holds %s", charger_id,
                 ", ".join(f"{b} v{s}" for b, s in sorted(plan.targets.items())))
    return Recorded(confirmed, next_try.next_attempt_at)
