"""The registry outbox: deliveries queued in the store, sent until accepted, never duplicated.

A delivery is enqueued in the same transaction as the bundle version it
carries, with the exact body to send and its idempotency key. Senders claim a
row with a short lease (so several certd processes can drive one outbox), log
the attempt before the send, and record the answer after it. A crash between
send and record leaves the row pending: the next send repeats the same body
under the same key, and the registry drops the repeat.

How a row is sent depends on its registry's kind and is none of this module's
business: it hands a `PushMessage` to the registry's `PushTarget` (`certd.trust.push`)
and records the `PushOutcome` (accepted, retry with backoff, rejected).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, select

from certd.config import Config
from certd.config.trust import RegistryConfig
from certd.errors import CertdError
from certd.store.db import session_scope
from certd.store.trust import TrustBundleVersion, TrustDelivery, TrustDeliveryAttempt
from certd.store.types import utcnow
from certd.trust import push
from certd.trust.push import PushMessage, PushOutcome, PushTarget

log = logging.getLogger(__name__)

PENDING, DELIVERED, REJECTED = "pending", "delivered", "rejected"
FIRST_DELAY = 30.0
MAX_DELAY = 6 * 3600.0
# 30 s * 4**5 already exceeds MAX_DELAY; a bigger exponent would only overflow the float.
MAX_BACKOFF_EXPONENT = 8
LEASE_MARGIN = 5.0

# Builds the push target of a configured registry (tests pass their own).
TargetFor = Callable[[RegistryConfig], PushTarget]


def retry_delay(attempts: int, retry_after: float | None = None) -> dt.timedelta:
    """Pure backoff: 30 s, 2 min, 8 min, 32 min, ... capped at 6 h; a longer Retry-After wins."""
    exponent = min(max(attempts - 1, 0), MAX_BACKOFF_EXPONENT)
    seconds = min(FIRST_DELAY * 4 ** exponent, MAX_DELAY)
    if retry_after is not None:
        seconds = min(max(seconds, retry_after), MAX_DELAY)
    return dt.timedelta(seconds=seconds)


def idempotency_key(version: TrustBundleVersion) -> str:
    return f"certd-{version.bundle}-{version.flavour}-v{version.seq}-{version.sha256}"


def document(version: TrustBundleVersion) -> dict[str, object]:
    """What a registry receives for one bundle version."""
    return {
        "bundle": version.bundle,
        "flavour": version.flavour,
        "version": version.seq,
        "previous_version": version.previous_seq,
        "sha256": version.sha256,
        "previous_sha256": version.previous_sha256,
        "pem": version.pem,
        "manifest": json.loads(version.manifest_json),
        "reason": version.reason,
        "idempotency_key": idempotency_key(version),
        "created_at": version.created_at.isoformat(),
    }


def registries_for(config: Config, bundle: str, flavour: str) -> list[RegistryConfig]:
    return [r for r in config.trust.registries
            if (not r.bundles or bundle in r.bundles) and flavour in r.flavours]


def enqueue(session: Session, config: Config, version: TrustBundleVersion) -> list[TrustDelivery]:
    """One delivery per matching registry, in the caller's transaction (with the version row)."""
    assert version.id is not None
    key = idempotency_key(version)
    body = json.dumps(document(version), sort_keys=True, separators=(",", ":"))
    created = []
    for registry in registries_for(config, version.bundle, version.flavour):
        exists = session.exec(select(TrustDelivery).where(
            TrustDelivery.registry_name == registry.name, TrustDelivery.idempotency_key == key)).first()
        if exists is not None:
            continue
        delivery = TrustDelivery(registry_name=registry.name, version_id=version.id,
                                 idempotency_key=key, body=body, next_attempt_at=version.created_at)
        session.add(delivery)
        created.append(delivery)
    session.flush()
    return created


@dataclass(frozen=True)
class DeliveryReport:
    delivery_id: int
    registry: str
    idempotency_key: str
    outcome: str  # accepted | retry | rejected | skipped
    status: int | None
    detail: str
    next_attempt_at: dt.datetime | None = None

    def line(self) -> str:
        status = f"HTTP {self.status}" if self.status is not None else "no answer"
        text = f"#{self.delivery_id} {self.registry} {self.idempotency_key}: {self.outcome} ({status})"
        if self.detail:
            text += f": {self.detail}"
        if self.outcome == "retry" and self.next_attempt_at:
            text += f"; next try {self.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
        return text


def _claim(engine: sa.Engine, delivery_id: int, now: dt.datetime, lease: dt.timedelta,
           force: bool) -> tuple[TrustDelivery, int] | None:
    """Take the row (atomic conditional UPDATE) and log the attempt before any byte is sent."""
    table = TrustDelivery.__table__  # type: ignore[attr-defined]
    condition = [table.c.id == delivery_id]
    if force:
        condition.append(table.c.state.in_([PENDING, REJECTED]))
    else:
        condition += [table.c.state == PENDING, table.c.next_attempt_at <= now,
                      sa.or_(table.c.lease_until.is_(None), table.c.lease_until <= now)]
    with session_scope(engine) as session:
        result = session.execute(  # type: ignore[call-overload]
            sa.update(table).where(*condition).values(
                lease_until=now + lease, attempts=table.c.attempts + 1, state=PENDING)
        )
        if result.rowcount != 1:
            return None
        delivery = session.get(TrustDelivery, delivery_id)
        assert delivery is not None
        session.refresh(delivery)
        # An attempt still "sending" was cut short by a crash: the registry may or may not have it.
        session.execute(sa.update(TrustDeliveryAttempt.__table__).where(  # type: ignore[attr-defined]
            TrustDeliveryAttempt.__table__.c.delivery_id == delivery_id,  # type: ignore[attr-defined]
            TrustDeliveryAttempt.__table__.c.outcome == "sending",  # type: ignore[attr-defined]
        ).values(outcome="interrupted", detail="certd stopped before the answer was recorded"))
        attempt = TrustDeliveryAttempt(delivery_id=delivery_id, started_at=now)
        session.add(attempt)
        session.flush()
        assert attempt.id is not None
        return delivery, attempt.id


def _record(engine: sa.Engine, delivery_id: int, attempt_id: int, result: PushOutcome,
            now: dt.datetime) -> DeliveryReport:
    with session_scope(engine) as session:
        delivery = session.get(TrustDelivery, delivery_id)
        attempt = session.get(TrustDeliveryAttempt, attempt_id)
        assert delivery is not None and attempt is not None
        attempt.finished_at = utcnow()
        attempt.status_code = result.status
        attempt.outcome = result.outcome
        attempt.detail = result.detail or None
        delivery.last_status = result.status
        delivery.lease_until = None
        next_at: dt.datetime | None = None
        if result.outcome == push.ACCEPTED:
            delivery.state = DELIVERED
            delivery.delivered_at = now
            delivery.last_error = None
        elif result.outcome == push.REJECTED:
            delivery.state = REJECTED
            delivery.last_error = result.detail or f"HTTP {result.status}"
        else:
            next_at = now + retry_delay(delivery.attempts, result.retry_after)
            delivery.next_attempt_at = next_at
            delivery.last_error = result.detail or f"HTTP {result.status}"
        session.add(delivery)
        session.add(attempt)
        return DeliveryReport(delivery_id, delivery.registry_name, delivery.idempotency_key,
                              result.outcome, result.status, result.detail, next_at)


def safe_failure(registry: RegistryConfig, exc: Exception) -> str:
    """Why a send failed, for the store, the log and reports, without any header value.

    certd's own errors name where a secret comes from, never its value; any other exception's
    text may quote a header (http.client puts the whole value in its ValueError), so only its
    type is named.
    """
    if isinstance(exc, CertdError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot send to registry {registry.name}: {type(exc).__name__} ({exc.strerror})"
    return (f"cannot send to registry {registry.name}: {type(exc).__name__} "
            "(details withheld: they may contain a header value)")


def _send(target_for: TargetFor, registry: RegistryConfig, delivery: TrustDelivery) -> PushOutcome:
    """One send; any failure becomes a retry with backoff, so a broken registry never jams the rest."""
    try:
        result = target_for(registry).deliver(
            PushMessage(registry.name, delivery.idempotency_key, delivery.body.encode()))
    except Exception as exc:  # noqa: BLE001 - per row: record, back off, go on with the others
        return PushOutcome(push.RETRY, None, safe_failure(registry, exc))
    if result.outcome not in push.OUTCOMES:
        return PushOutcome(push.RETRY, result.status, f"registry {registry.name}: its target answered "
                                                 f"{result.outcome!r}, not accepted/retry/rejected")
    return result


def deliver(
    config: Config, engine: sa.Engine, *, now: dt.datetime | None = None, force: bool = False,
    ids: list[int] | None = None, target_for: TargetFor = push.target_for,
) -> list[DeliveryReport]:
    """Send due deliveries (all pending and rejected ones with `force`); one report per row tried."""
    now = now or utcnow()
    table = TrustDelivery.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        query = sa.select(table.c.id, table.c.registry_name).order_by(table.c.id)
        if ids is not None:
            query = query.where(table.c.id.in_(ids))
        if force:
            query = query.where(table.c.state.in_([PENDING, REJECTED]))
        else:
            query = query.where(table.c.state == PENDING, table.c.next_attempt_at <= now)
        candidates = list(session.execute(query))
    configured = {r.name: r for r in config.trust.registries}
    reports: list[DeliveryReport] = []
    for delivery_id, registry_name in candidates:
        registry = configured.get(registry_name)
        if registry is None:
            reports.append(DeliveryReport(delivery_id, registry_name, "", "skipped", None,
                                          "registry no longer in [trust.registries]"))
            continue
        lease = dt.timedelta(seconds=registry.timeout + LEASE_MARGIN)
        claimed = _claim(engine, delivery_id, now, lease, force)
        if claimed is None:
            continue  # another process holds it or delivered it meanwhile
        delivery, attempt_id = claimed
        result = _send(target_for, registry, delivery)
        report = _record(engine, delivery_id, attempt_id, result, now)
        level = logging.INFO if report.outcome == push.ACCEPTED else logging.WARNING
        log.log(level, "fleet registry delivery %s", report.line())
        reports.append(report)
    return reports


@dataclass(frozen=True)
class DeliveryView:
    delivery: TrustDelivery
    version: TrustBundleVersion
    attempts: list[TrustDeliveryAttempt]


def deliveries(engine: sa.Engine, *, state: str | None = None, limit: int = 50) -> list[DeliveryView]:
    """Newest first, with their version and every attempt."""
    with session_scope(engine) as session:
        query = select(TrustDelivery).order_by(TrustDelivery.id.desc()).limit(limit)  # type: ignore[union-attr]
        if state:
            query = query.where(TrustDelivery.state == state)
        views = []
        for delivery in session.exec(query).all():
            version = session.get(TrustBundleVersion, delivery.version_id)
            assert version is not None
            attempts = list(session.exec(select(TrustDeliveryAttempt).where(
                TrustDeliveryAttempt.delivery_id == delivery.id).order_by(TrustDeliveryAttempt.id)).all())
            views.append(DeliveryView(delivery, version, attempts))
        return views
