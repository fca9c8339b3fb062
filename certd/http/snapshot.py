"""What the HTTP server shows, read from the store in a worker thread (plus what the loop saw).

Every function here is synchronous, reads only, and returns plain JSON-ready
data: /api/v1/status dumps it, the status page renders it, /metrics turns it
into gauges. Columns that hold secrets (private keys, charger password hashes,
registry request bodies) are never selected.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import Counter
from typing import Any

import sqlalchemy as sa

from certd.config import Config
from certd.http.live import LiveView
from certd.renewal.status import IssuedView, certificate_row, read_rows

RECENT_EVENTS = 30


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def lifetime_used(issued: IssuedView | None, now: dt.datetime) -> float | None:
    """The share of the certificate's lifetime already gone, 0..1 (None: nothing issued)."""
    if issued is None:
        return None
    total = (issued.not_after - issued.not_before).total_seconds()
    if total <= 0:
        return 1.0
    return min(1.0, max(0.0, (now - issued.not_before).total_seconds() / total))


def certificates(session: Any, config: Config, now: dt.datetime) -> list[dict[str, Any]]:
    """`certd status --json` rows, plus validity start and lifetime used (for bars and timelines)."""
    rows = read_rows(session, [c.name for c in config.certificates])
    result = []
    for cert_cfg in config.certificates:
        row = certificate_row(cert_cfg, rows, now)
        managed = rows.managed.get(cert_cfg.name)
        issued = rows.issued.get(managed.current_id) if managed and managed.current_id else None
        row["not_before"] = _iso(issued.not_before) if issued else None
        row["issued_at"] = _iso(issued.issued_at) if issued else None
        row["issued_id"] = issued.id if issued else None
        used = lifetime_used(issued, now)
        row["lifetime_used"] = round(used, 4) if used is not None else None
        result.append(row)
    return result


def _file_leaf(path: str) -> dict[str, Any] | None:
    """The leaf of a PEM file another tool keeps (cert_files listeners): what should be served."""
    from cryptography import x509

    try:
        with open(path, "rb") as handle:
            leaf = x509.load_pem_x509_certificates(handle.read())[0]
    except (OSError, ValueError, IndexError):
        return None
    return {"certificate": path, "serial": f"{leaf.serial_number:x}",
            "not_after": _iso(leaf.not_valid_after_utc)}


def listeners(session: Any, config: Config, live: LiveView, now: dt.datetime) -> list[dict[str, Any]]:
    """Per OCPP listener: what it serves (live) against what the store says it should serve.

    "Should" is certd.serve.material's choice: the current issuance, or the previous one while a
    trust rollover gate holds the new one back on this listener.
    """
    from certd.serve.material import served_certificate

    result = []
    for listener in config.ocpp.listeners if config.ocpp.enabled else []:
        label = listener.label
        expected: list[dict[str, Any]] = []
        for name in listener.certificates:
            issued = served_certificate(session, name, label, now)
            expected.append({"certificate": name, "issued_id": issued.id if issued else None,
                             "serial": issued.serial if issued else None,
                             "not_after": _iso(issued.not_after) if issued else None})
        for files in listener.cert_files:
            expected.append(_file_leaf(files.fullchain) or {"certificate": files.fullchain,
                                                             "serial": None, "not_after": None})
        state = live.listeners.get(label)
        serving = list(state.served) if state else []
        served_serials = {s["serial"] for s in serving}
        missing = [e for e in expected if e["serial"] not in served_serials]
        result.append({
            "name": label, "host": listener.host, "tls_profile": listener.tls_profile,
            "insecure": listener.insecure, "bound": bool(state and state.bound),
            "ports": list(state.ports) if state else [], "serving": serving, "expected": expected,
            # Insecure listeners serve no certificate; any other listener must serve each expected one.
            "matches": listener.insecure or (bool(expected) and not missing and len(serving) == len(expected)),
            "mismatched": [e["certificate"] for e in missing],
            "connected": state.connected if state else 0,
        })
    return result


def dns_records(session: Any) -> list[dict[str, Any]]:
    from certd.store.hosts import ManagedDnsRecord

    table = ManagedDnsRecord.__table__  # type: ignore[attr-defined]
    rows = session.connection().execute(sa.select(table).order_by(table.c.name, table.c.type))
    return [{"name": r.name, "type": r.type, "state": r.state, "content": r.content,
             "adopted": r.adopted, "last_action": r.last_action, "last_error": r.last_error,
             "last_checked_at": _iso(r.last_checked_at), "last_changed_at": _iso(r.last_changed_at)}
            for r in rows]


def bundles(session: Any, config: Config) -> list[dict[str, Any]]:
    """The newest version of every bundle flavour, with its CA certificates' validity."""
    from certd.store.trust import TrustBundleVersion as V, TrustCaCertificate as CA

    newest = (sa.select(sa.func.max(V.id)).group_by(V.bundle, V.flavour).scalar_subquery())
    columns = (V.bundle, V.flavour, V.seq, V.sha256, V.reason, V.created_at, V.manifest_json)  # type: ignore[var-annotated]
    versions = session.connection().execute(sa.select(*columns).where(V.id.in_(newest))  # type: ignore[union-attr]
                               .order_by(V.bundle, V.flavour)).all()
    members: dict[str, list[dict[str, Any]]] = {}
    fingerprints: set[str] = set()
    for v in versions:
        entries = json.loads(v.manifest_json).get("certificates", [])
        members[f"{v.bundle}/{v.flavour}"] = entries
        fingerprints.update(e["fingerprint"] for e in entries)
    starts = dict(session.connection().execute(sa.select(CA.fingerprint, CA.not_before)  # type: ignore[call-overload]
                                  .where(CA.fingerprint.in_(sorted(fingerprints)))).all()) if fingerprints else {}
    return [{
        "bundle": v.bundle, "flavour": v.flavour, "version": v.seq, "sha256": v.sha256,
        "reason": v.reason, "created_at": _iso(v.created_at),
        "members": [{"subject": e["subject"], "role": e["role"], "fingerprint": e["fingerprint"],
                     "not_before": _iso(starts.get(e["fingerprint"])), "not_after": e["not_after"]}
                    for e in members[f"{v.bundle}/{v.flavour}"]],
    } for v in versions]


def deliveries(session: Any, config: Config) -> dict[str, Any]:
    """Registry deliveries: counts by state per registry, the oldest waiting one, the newest rows."""
    from certd.store.trust import TrustBundleVersion as V, TrustDelivery as D

    counts: dict[str, dict[str, int]] = {r.name: {"pending": 0, "delivered": 0, "rejected": 0}
                                         for r in config.trust.registries}
    for registry, state, number in session.connection().execute(
            sa.select(D.registry_name, D.state, sa.func.count()).group_by(D.registry_name, D.state)).all():
        counts.setdefault(registry, {"pending": 0, "delivered": 0, "rejected": 0})[state] = number
    oldest = {registry: _iso(at) for registry, at in session.connection().execute(
        sa.select(D.registry_name, sa.func.min(D.created_at)).where(D.state == "pending")
        .group_by(D.registry_name)).all()}
    rows = session.connection().execute(
        sa.select(D.id, D.registry_name, D.state, D.attempts, D.last_status, D.created_at,  # type: ignore[call-overload]
                  D.delivered_at, D.next_attempt_at, V.bundle, V.flavour, V.seq)
        .join(V, V.id == D.version_id).order_by(D.id.desc()).limit(20)).all()  # type: ignore[union-attr]
    return {"by_registry": counts, "oldest_pending": oldest, "recent": [{
        "registry": r.registry_name, "bundle": r.bundle, "flavour": r.flavour, "version": r.seq,
        "state": r.state, "attempts": r.attempts, "last_status": r.last_status,
        "created_at": _iso(r.created_at), "delivered_at": _iso(r.delivered_at),
        "next_attempt_at": _iso(r.next_attempt_at) if r.state == "pending" else None,
    } for r in rows]}


def chargers(session: Any) -> dict[str, Any]:
    """Registry counts: connected (any certd node), pending approval, by version, by vendor/model.
    Two scans: one grouped by everything the counts need, one by vendor and model."""
    from certd.store.chargers import REGISTRATION_PENDING, Charger as C

    conn = session.connection()
    online = C.connected_node.is_not(None)  # type: ignore[union-attr]
    total = connected = pending = disabled = 0
    by_version: dict[str, int] = {}
    for version, is_online, registration, enabled, number in conn.execute(
            sa.select(C.ocpp_version, online, C.registration, C.enabled, sa.func.count())
            .group_by(C.ocpp_version, online, C.registration, C.enabled)):
        total += number
        pending += number if registration == REGISTRATION_PENDING else 0
        disabled += 0 if enabled else number
        if is_online:
            connected += number
            by_version[version or "unknown"] = by_version.get(version or "unknown", 0) + number
    models = conn.execute(
        sa.select(C.vendor, C.model, sa.func.count().label("n")).group_by(C.vendor, C.model)
        .order_by(sa.desc("n"), C.vendor, C.model).limit(20)).all()
    return {"registered": total, "connected": connected, "pending_approval": pending,
            "disabled": disabled, "by_version": by_version,
            "by_vendor_model": [{"vendor": v or "unknown", "model": m or "unknown", "count": n}
                                for v, m, n in models]}


def rollover(config: Config, engine: sa.Engine, live: LiveView, now: dt.datetime) -> list[dict[str, Any]]:
    """Per gated listener, `certd fleet status`'s view: chargers by bucket, gates and their state."""
    from certd.errors import ConfigError
    from certd.rollover.gate_store import listener_status

    try:
        statuses, _notes = listener_status(config, engine, now=now, live=live.charger_ids)
    except ConfigError:
        return []
    return [{
        "listener": s.listener, "counts": dict(s.counts), "total": sum(s.counts.values()),
        "bundles": dict(s.bundles),
        "gates": [{"certificate": g.cert_name, "bundle": g.bundle, "state": g.state, "reason": g.reason,
                   "deadline_at": _iso(g.deadline_at), "switched_at": _iso(g.switched_at),
                   "switch_reason": g.switch_reason, "forced": g.forced,
                   "needed": g.gate.needed if g.gate else None} for g in s.gates],
    } for s in statuses]


def leases(session: Any, now: dt.datetime) -> list[dict[str, Any]]:
    from certd.store.leases import Lease as L

    rows = session.connection().execute(
        sa.select(L.name, L.purpose, L.holder, L.acquired_at, L.expires_at).order_by(L.name)).all()  # type: ignore[call-overload]
    return [{"name": r.name, "purpose": r.purpose, "holder": r.holder, "since": _iso(r.acquired_at),
             "expires_at": _iso(r.expires_at)} for r in rows if r.expires_at > now]


def events(session: Any, limit: int = RECENT_EVENTS) -> list[dict[str, Any]]:
    """Recent things that happened: issuance attempts, bundle versions, deliveries, gate switches,
    charger security events; newest first."""
    from certd.store.chargers import ChargerAuditEvent as A
    from certd.store.models import IssuanceAttempt as I
    from certd.store.rollover import RolloverGate as G
    from certd.store.trust import TrustBundleVersion as V, TrustDelivery as D

    conn = session.connection()

    def newest(*columns: Any, order: Any, where: Any = sa.true()) -> list[Any]:
        query = sa.select(*columns).where(where).order_by(order.desc()).limit(limit)
        return conn.execute(query).all()  # type: ignore[no-any-return]

    found: list[dict[str, Any]] = []
    for r in newest(I.name, I.started_at, I.finished_at, I.outcome, I.error, order=I.id):
        found.append({"at": r.finished_at or r.started_at, "kind": "issuance", "subject": r.name,
                      "outcome": r.outcome, "detail": r.error})
    for r in newest(V.bundle, V.flavour, V.seq, V.reason, V.created_at, order=V.id):
        found.append({"at": r.created_at, "kind": "bundle version", "subject": f"{r.bundle} ({r.flavour})",
                      "outcome": f"v{r.seq}", "detail": r.reason})
    for r in newest(D.registry_name, D.state, D.delivered_at, D.created_at, D.last_status, order=D.id):
        found.append({"at": r.delivered_at or r.created_at, "kind": "delivery", "subject": r.registry_name,
                      "outcome": r.state, "detail": f"HTTP {r.last_status}" if r.last_status else None})
    for r in newest(G.listener, G.cert_name, G.switched_at, G.switch_reason, G.forced, order=G.switched_at,
                    where=G.switched_at.is_not(None)):  # type: ignore[union-attr]
        found.append({"at": r.switched_at, "kind": "rollover switch", "outcome": "forced" if r.forced
                      else "switched", "subject": f"{r.listener} / {r.cert_name}", "detail": r.switch_reason})
    for r in newest(A.at, A.kind, A.charger_id, A.detail, order=A.id):
        found.append({"at": r.at, "kind": f"charger {r.kind.replace('_', ' ')}", "subject": r.charger_id,
                      "outcome": None, "detail": r.detail})
    found.sort(key=lambda e: e["at"], reverse=True)
    return [{**e, "at": _iso(e["at"])} for e in found[:limit]]


class TallyCache:
    """Fleet-wide tallies (chargers, gray-cloud records, bundle versions, deliveries), read at most
    every MAX_AGE seconds: they change over minutes, and counting 5,000 chargers at every scrape
    would cost the OCPP loop's heartbeats more than it tells. Certificates, listeners and leases
    are read at every request. Thread-safe (the server's worker threads share it)."""

    MAX_AGE = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._at = 0.0

    def get(self, session: Any, config: Config) -> dict[str, Any]:
        with self._lock:
            if self._value is not None and time.monotonic() - self._at < self.MAX_AGE:
                return self._value
        value = read_tallies(session, config)
        with self._lock:
            self._value, self._at = value, time.monotonic()
        return value

    def clear(self) -> None:
        with self._lock:
            self._value = None


def read_tallies(session: Any, config: Config) -> dict[str, Any]:
    return {"dns_records": dns_records(session), "bundles": bundles(session, config),
            "deliveries": deliveries(session, config), "chargers": chargers(session)}


def overview(config: Config, engine: sa.Engine, live: LiveView, now: dt.datetime,
             rollover_status: list[dict[str, Any]], *, with_events: bool = True,
             tallies: TallyCache | None = None) -> dict[str, Any]:
    """Everything but the charger list and the rollover (`rollover_status`, see RolloverCache),
    in one read (worker thread); `tallies` None: those are read now too."""
    from certd.store.db import session_scope

    with session_scope(engine) as session:
        data: dict[str, Any] = {
            "generated_at": _iso(now),
            "certificates": certificates(session, config, now),
            "listeners": listeners(session, config, live, now),
            **(tallies.get(session, config) if tallies is not None else read_tallies(session, config)),
            "leases": leases(session, now),
        }
        if with_events:
            data["events"] = events(session)
    data["dns_record_states"] = dict(Counter(r["state"] for r in data["dns_records"]))
    data["rollover"] = rollover_status
    data["mqtt"] = mqtt_connection(config, engine)
    return data


def mqtt_connection(config: Config, engine: sa.Engine) -> dict[str, Any] | None:
    """The daemon's broker connection as it last wrote it (certd.mqtt.status); None without [mqtt]."""
    from certd.mqtt.status import mqtt_status
    from certd.store.mqtt import MQTT_CONNECTED

    status = mqtt_status(config, engine)
    if status is None:
        return None
    return {"broker": status.broker, "state": status.state, "since": _iso(status.since),
            "connected": status.state == MQTT_CONNECTED and not status.daemon_gone,
            "line": status.line()}
