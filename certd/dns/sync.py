"""Gray-cloud sync: read the DNS provider (Cloudflare), plan (certd.dns.records), apply, record.

`sync_hosts` is what the CLI (`certd dns plan|sync`) and the daemon call. It is
synchronous (the provider SDK is): the daemon runs it in a worker thread.

Nothing is left half-applied and unrecorded: the ownership row is written
before a create or delete reaches Cloudflare and completed after it, each step
in its own transaction, so an API failure or a crash in between leaves a row
that the next sync finishes (a created record is found by its marker comment,
a delete is retried). Failures are recorded on the row (`last_error`) and
reported; one failing record does not stop the others.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from certd.dns.addresses import InterfaceSnapshot, resolve_hosts
from certd.dns.challenge_plan import explicit_zone
from certd.dns.provider import DnsProvider, DnsRecord, Zone
from certd.dns.records import Action, DesiredHost, OwnedRecord, Plan, plan
from certd.errors import CertdError
from certd.store.db import session_scope
from certd.store.hosts import ManagedDnsRecord, all_rows, find_row
from certd.store.types import utcnow

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlmodel import Session

    from certd.config import Config

log = logging.getLogger(__name__)

Outcome = Literal["planned", "applied", "failed", "unchanged"]
SyncOutcome = Literal["no changes", "changed", "failed"]


@dataclass(frozen=True)
class ActionResult:
    action: Action
    outcome: Outcome
    error: str | None = None


@dataclass(frozen=True)
class SyncReport:
    """What a plan or sync found and did; `outcome` is what the CLI turns into an exit code."""

    applied: bool  # False for `certd dns plan`
    plan: Plan
    results: tuple[ActionResult, ...]
    started_at: dt.datetime
    finished_at: dt.datetime
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def failures(self) -> tuple[ActionResult, ...]:
        return tuple(r for r in self.results if r.outcome == "failed" or r.action.is_problem)

    @property
    def changed(self) -> bool:
        """Sync: something was written. Plan: something would be."""
        wanted = "applied" if self.applied else "planned"
        return any(r.action.is_change and r.outcome == wanted for r in self.results)

    @property
    def outcome(self) -> SyncOutcome:
        if self.failures:
            return "failed"
        return "changed" if self.changed else "no changes"


def sync_interval(config: "Config") -> float:
    """Seconds between the daemon's scheduled syncs (`[dns_records] interval`, default 300)."""
    return float(config.dns_records.interval)


def _desired_hosts(config: "Config", adapter: DnsProvider,
                   snapshot: InterfaceSnapshot | None) -> list[DesiredHost]:
    desired = []
    for host, resolved in zip(config.hosts, resolve_hosts(list(config.hosts), snapshot), strict=True):
        errors = dict(resolved.errors)
        zone = None
        try:
            if host.zone or host.zone_id:
                zone = explicit_zone(adapter, host.name, zone=host.zone, zone_id=host.zone_id,
                                     nameservers=config.dns.nameservers)
            else:
                zone = adapter.find_zone(host.name)
        except CertdError as exc:
            errors["*"] = str(exc)
        desired.append(DesiredHost(
            name=host.name, zone=zone, contents=resolved.contents, errors=errors,
            ttl=host.cloudflare_ttl, adopt=host.adopt, keep=host.keep,
            allow_public=host.allow_public,
        ))
    return desired


def _read_current(adapter: DnsProvider, wanted: dict[str, Zone]
                  ) -> tuple[dict[str, list[DnsRecord]], dict[str, str]]:
    """All records at each name (any type), and why a name could not be read."""
    current: dict[str, list[DnsRecord]] = {}
    errors: dict[str, str] = {}
    for name, zone in sorted(wanted.items()):
        try:
            current[name] = adapter.list_records(zone, name=name)
        except CertdError as exc:
            errors[name] = str(exc)
    return current, errors


def as_owned(row: ManagedDnsRecord) -> OwnedRecord:
    """The planner's view of one ownership row (the planner stays free of the store)."""
    return OwnedRecord(
        name=row.name, type=row.type, zone_id=row.zone_id, zone_name=row.zone_name,
        record_id=row.record_id, content=row.content, keep=row.keep,
        state=row.state,  # type: ignore[arg-type]
        adopted=row.adopted, original_comment=row.original_comment,
    )


def owned_records(session: Session) -> list[OwnedRecord]:
    return [as_owned(row) for row in all_rows(session)]


def build_plan(config: "Config", engine: "sa.Engine", adapter: DnsProvider,
               snapshot: InterfaceSnapshot | None = None) -> Plan:
    """Read local addresses, the store and Cloudflare; decide. Writes nothing."""
    desired = _desired_hosts(config, adapter, snapshot)
    with session_scope(engine) as session:
        owned = owned_records(session)
    wanted: dict[str, Zone] = {h.name: h.zone for h in desired if h.zone is not None}
    desired_names = {h.name for h in desired}
    for row in owned:
        if row.name not in desired_names:
            wanted.setdefault(row.name, Zone(id=row.zone_id, name=row.zone_name))
    current, read_errors = _read_current(adapter, wanted)
    return plan(desired, owned, current, marker=config.dns_records.marker,
                keep_removed=config.dns_records.keep_removed, read_errors=read_errors)


class _Applier:
    """Applies one action at a time; every step that matters is committed on its own."""

    def __init__(self, engine: "sa.Engine", adapter: DnsProvider, marker: str,
                 clock: Callable[[], dt.datetime]) -> None:
        self.engine = engine
        self.adapter = adapter
        self.marker = marker
        self.clock = clock

    # -- store helpers -------------------------------------------------------
    def _row(self, session, action: Action) -> ManagedDnsRecord | None:  # type: ignore[no-untyped-def]
        return find_row(session, action.name, action.type)

    def _note(self, action: Action, *, error: str | None, checked: bool = True) -> None:
        """Record a check (and its error, if any) on the row, if certd has one."""
        with session_scope(self.engine) as session:
            row = self._row(session, action)
            if row is None:
                return
            if checked:
                row.last_checked_at = self.clock()
            row.last_error = error
            if action.in_config:
                row.keep = action.keep
            session.add(row)

    def _zone(self, action: Action) -> Zone:
        if action.zone is not None:
            return action.zone
        assert action.owned is not None
        return Zone(id=action.owned.zone_id, name=action.owned.zone_name)

    # -- one action ----------------------------------------------------------
    def apply(self, action: Action) -> ActionResult:
        import sqlalchemy as sa

        handler = getattr(self, f"_{action.kind}")
        try:
            outcome = handler(action)
        except (CertdError, sa.exc.SQLAlchemyError) as exc:
            # A store error (e.g. a concurrent sync wrote the same row) is reported like an API
            # error: the next sync starts again from what Cloudflare and the store then hold.
            message = str(exc) if isinstance(exc, CertdError) else f"store error: {exc.__class__.__name__}: {exc}"
            log.error("gray-cloud %s %s %s failed: %s", action.kind, action.type, action.name, message)
            try:
                self._note(action, error=f"{action.kind} failed: {message}")
            except sa.exc.SQLAlchemyError:
                log.exception("gray-cloud: could not record the failure of %s %s", action.type, action.name)
            return ActionResult(action, "failed", message)
        return ActionResult(action, outcome)

    def _create(self, action: Action) -> Outcome:
        assert action.zone is not None and action.content is not None
        zone = action.zone
        with session_scope(self.engine) as session:
            row = self._row(session, action) or ManagedDnsRecord(
                name=action.name, type=action.type, zone_id=zone.id, zone_name=zone.name)
            row.zone_id, row.zone_name = zone.id, zone.name
            row.record_id, row.state = None, "creating"
            row.content, row.ttl, row.keep = action.content, action.ttl, action.keep
            row.adopted, row.original_comment = False, None
            row.last_action, row.last_error = "create", None
            session.add(row)
        record = self.adapter.create_record(
            zone, type=action.type, name=action.name, content=action.content,
            ttl=action.ttl or 1, proxied=False, comment=self.marker,
        )
        with session_scope(self.engine) as session:
            created = self._row(session, action)
            assert created is not None, "the ownership row written before the create is gone"
            created.record_id, created.state, created.content = record.id, "present", record.content
            created.last_changed_at = created.last_checked_at = self.clock()
            session.add(created)
        log.info("gray-cloud: created %s %s -> %s", action.type, action.name, action.content)
        return "applied"

    def _patch(self, action: Action) -> None:
        assert action.record is not None
        if action.changes:
            self.adapter.update_record(self._zone(action), action.record, **action.changes)

    def _update(self, action: Action) -> Outcome:
        assert action.record is not None
        self._patch(action)
        with session_scope(self.engine) as session:
            row = self._row(session, action)
            assert row is not None, "update planned without an ownership row"
            row.record_id, row.state = action.record.id, "present"
            row.content, row.ttl, row.keep = action.content, action.ttl, action.keep
            row.last_action, row.last_error = action.kind, None
            row.last_changed_at = row.last_checked_at = self.clock()
            session.add(row)
        log.info("gray-cloud: %s %s %s: %s", action.kind, action.type, action.name, action.reason)
        for warning in action.warnings:
            log.warning("gray-cloud %s %s: %s", action.name, action.type, warning)
        return "applied"

    _repair = _update

    def _adopt(self, action: Action) -> Outcome:
        assert action.record is not None and action.zone is not None
        record, zone = action.record, action.zone
        # Ownership first: if the marker PATCH fails, the next sync restores the marker.
        with session_scope(self.engine) as session:
            row = self._row(session, action) or ManagedDnsRecord(
                name=action.name, type=action.type, zone_id=zone.id, zone_name=zone.name)
            row.zone_id, row.zone_name = zone.id, zone.name
            row.record_id, row.state = record.id, "present"
            row.content, row.ttl, row.keep = record.content, record.ttl, action.keep
            row.adopted, row.original_comment = True, record.comment
            row.last_action, row.last_error = "adopt", None
            row.last_changed_at = row.last_checked_at = self.clock()
            session.add(row)
        self._patch(action)
        log.info("gray-cloud: adopted %s %s -> %s", action.type, action.name, record.content)
        return "applied"

    def _delete(self, action: Action) -> Outcome:
        if action.record is not None:
            with session_scope(self.engine) as session:
                row = self._row(session, action)
                if row is not None:
                    row.state, row.last_action = "deleting", "delete"
                    session.add(row)
            self.adapter.delete_record(self._zone(action), action.record.id)
            log.info("gray-cloud: deleted %s %s (%s)", action.type, action.name, action.record.content)
        self._forget(action)
        return "applied"

    def _release(self, action: Action) -> Outcome:
        if action.record is not None:
            self._patch(action)
        self._forget(action)
        log.info("gray-cloud: released %s %s: %s", action.type, action.name, action.reason)
        return "applied"

    def _forget(self, action: Action) -> None:
        with session_scope(self.engine) as session:
            row = self._row(session, action)
            if row is not None:
                session.delete(row)

    def _leave(self, action: Action) -> Outcome:
        if action.owned is None or action.record is None:
            return "unchanged"  # a foreign record: nothing of certd's to record
        with session_scope(self.engine) as session:
            row = self._row(session, action)
            if row is not None:
                # Also completes an interrupted create: the record found by its marker is claimed.
                row.record_id, row.state = action.record.id, "present"
                row.content, row.ttl, row.keep = action.record.content, action.record.ttl, action.keep
                row.last_checked_at, row.last_error = self.clock(), None
                session.add(row)
        return "unchanged"

    def _conflict(self, action: Action) -> Outcome:
        self._note(action, error=action.reason)
        return "unchanged"

    _error = _conflict


def sync_hosts(
    config: "Config",
    engine: "sa.Engine",
    adapter: DnsProvider,
    *,
    apply: bool,
    snapshot: InterfaceSnapshot | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
) -> SyncReport:
    """Plan (apply=False: change nothing) or sync (apply=True) the `[[hosts]]` records."""
    started = clock()
    the_plan = build_plan(config, engine, adapter, snapshot)
    for warning in the_plan.warnings:
        log.warning("gray-cloud %s", warning)
    if not apply:
        results = tuple(
            ActionResult(a, "planned" if a.is_change else "unchanged") for a in the_plan.actions
        )
        return SyncReport(False, the_plan, results, started, clock(), the_plan.warnings)
    applier = _Applier(engine, adapter, config.dns_records.marker, clock)
    results = tuple(applier.apply(action) for action in the_plan.actions)
    return SyncReport(True, the_plan, results, started, clock(), the_plan.warnings)


@dataclass(frozen=True)
class ManagedRecordStatus:
    name: str
    type: str
    zone: str
    content: str | None
    record_id: str | None
    state: str
    keep: bool
    adopted: bool
    in_config: bool
    last_action: str | None
    last_checked_at: dt.datetime | None
    last_changed_at: dt.datetime | None
    last_error: str | None


def managed_status(config: "Config", engine: "sa.Engine") -> list[ManagedRecordStatus]:
    """The ownership rows, for `certd dns status` (no Cloudflare call)."""
    configured = {h.name for h in config.hosts}
    with session_scope(engine) as session:
        rows = all_rows(session)
    return [
        ManagedRecordStatus(
            name=r.name, type=r.type, zone=r.zone_name, content=r.content, record_id=r.record_id,
            state=r.state, keep=r.keep, adopted=r.adopted, in_config=r.name in configured,
            last_action=r.last_action, last_checked_at=r.last_checked_at,
            last_changed_at=r.last_changed_at, last_error=r.last_error,
        )
        for r in rows
    ]


def sync_wanted(config: "Config", engine: "sa.Engine") -> bool:
    """Hosts are configured, or records certd still owns may need deleting after their removal."""
    if config.hosts:
        return True
    from sqlmodel import select

    from certd.store.db import session_scope
    from certd.store.hosts import ManagedDnsRecord

    with session_scope(engine) as session:
        return session.exec(select(ManagedDnsRecord.id).limit(1)).first() is not None
