"""DNS-01 challenge records: created through the DNS provider, tracked in the store, always removed.

A row is written before each create call and deleted only after the record is
gone, so a crash at any point leaves enough to clean up at the next start. The row
names the record as written (a delegated challenge's target), its zone and the
credential (account) that wrote it, so cleanup needs no lookup. With a `fence` (the
order's hold on its certificate's lease) nothing is created or deleted once another
process took the lease over: the records are then its to delete.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import sqlalchemy as sa
from sqlmodel import select

from certd.dns.delegation import ChallengeTarget, challenge_name
from certd.dns.provider import DnsProvider, Zone
from certd.errors import CertdError
from certd.store import leases
from certd.store.db import session_scope
from certd.store.models import ChallengeRecord, IssuanceAttempt

log = logging.getLogger(__name__)

CHALLENGE_TTL = 60  # the lowest TTL Cloudflare accepts on non-enterprise zones
CHALLENGE_COMMENT = "certd ACME challenge (temporary)"


__all__ = ["Dns01Records", "challenge_name", "cleanup_leftover_records", "cleanup_records_of",
           "has_leftover_records", "remove_challenge_record"]


class Dns01Records:
    """The TXT records of one issuance attempt.

    `targets` (challenge name -> where its TXT goes, from certd.dns.challenge_plan) is
    decided before the order; a challenge name without one goes to the zone
    `find_zone` gives, at the challenge name itself.
    """

    def __init__(self, dns: DnsProvider, engine: sa.Engine, attempt_id: int | None,
                 targets: Mapping[str, ChallengeTarget] | None = None, *,
                 fence: leases.Fence | None = None) -> None:
        self._dns = dns
        self._engine = engine
        self._attempt_id = attempt_id
        self._targets = dict(targets or {})
        self._fence = fence
        self.zones: dict[str, Zone] = {}  # challenge name -> zone written to
        self.record_names: dict[str, str] = {}  # challenge name -> record name written

    def present(self, fqdn: str, value: str) -> Zone:
        target = self._targets.get(fqdn)
        zone = target.zone if target else self._dns.find_zone(fqdn)
        name = target.record_name if target else fqdn
        self.zones[fqdn] = zone
        self.record_names[fqdn] = name
        with session_scope(self._engine) as session:
            if self._fence is not None:
                self._fence.verify(session.connection())
            row = ChallengeRecord(attempt_id=self._attempt_id, zone_id=zone.id, zone_name=zone.name,
                                  fqdn=name, value=value, account=zone.account)
            session.add(row)
        record = self._dns.create_record(zone, type="TXT", name=name, content=value,
                                         ttl=CHALLENGE_TTL, comment=CHALLENGE_COMMENT)
        with session_scope(self._engine) as session:
            stored = session.get(ChallengeRecord, row.id)
            if stored is not None:
                stored.record_id = record.id
                session.add(stored)
        return zone

    def expected_by_zone(self, expected: Mapping[str, set[str]]) -> dict[str, dict[str, set[str]]]:
        """The values the CA will look up, as records to see at each zone's nameservers: a
        delegated challenge is checked at its target (two names may share one target)."""
        by_zone: dict[str, dict[str, set[str]]] = {}
        for fqdn, values in expected.items():
            names = by_zone.setdefault(self.zones[fqdn].name, {})
            names.setdefault(self.record_names.get(fqdn, fqdn), set()).update(values)
        return by_zone

    def cleanup(self) -> list[str]:
        """Delete every record of this attempt; returns errors (rows stay for the next start)."""
        with session_scope(self._engine) as session:
            rows = session.exec(
                select(ChallengeRecord).where(ChallengeRecord.attempt_id == self._attempt_id)
            ).all()
        return [err for row in rows
                if (err := remove_challenge_record(self._dns, self._engine, row, self._fence))]


def remove_challenge_record(dns: DnsProvider, engine: sa.Engine, row: ChallengeRecord,
                            fence: leases.Fence | None = None) -> str | None:
    """Delete the record behind `row`, then the row; an error message if the record may remain."""
    zone = Zone(id=row.zone_id, name=row.zone_name, account=row.account)
    try:
        if fence is not None:
            fence.check(engine)
        if row.record_id:
            dns.delete_record(zone, row.record_id)
        else:
            # Crashed before the create answered: the record may or may not exist.
            for record in dns.list_records(zone, name=row.fqdn, type="TXT", content=row.value):
                dns.delete_record(zone, record.id)
    except leases.LeaseLost as exc:
        log.warning("leaving challenge record %s to the process that took the order over: %s", row.fqdn, exc)
        return f"{row.fqdn}: {exc}"
    except CertdError as exc:
        log.error("could not delete challenge record %s: %s (will retry at next start)", row.fqdn, exc)
        return f"{row.fqdn}: {exc}"
    with session_scope(engine) as session:
        stored = session.get(ChallengeRecord, row.id)
        if stored is not None:
            session.delete(stored)
    return None


def has_leftover_records(engine: sa.Engine) -> bool:
    """Whether any challenge record is on file: one cheap query, so a command with nothing to
    clean never opens the DNS provider."""
    with session_scope(engine) as session:
        return session.exec(select(ChallengeRecord.id).limit(1)).first() is not None


def cleanup_records_of(dns: DnsProvider, engine: sa.Engine, name: str,
                       fence: leases.Fence | None = None) -> int:
    """Remove the records of `name`'s interrupted order. The caller holds `name`'s lease (it took
    it over from a process that is gone), so no order of `name` can own them."""
    with session_scope(engine) as session:
        rows = list(session.exec(
            select(ChallengeRecord)
            .join(IssuanceAttempt, ChallengeRecord.attempt_id == IssuanceAttempt.id)  # type: ignore[arg-type]
            .where(IssuanceAttempt.name == name)
        ).all())
    return _remove_leftovers(dns, engine, rows, f"an interrupted order of {name}", fence) if rows else 0


def cleanup_leftover_records(dns: DnsProvider, engine: sa.Engine, purpose: str = "certd") -> int:
    """Remove records left by a crashed or killed run. Call before starting new orders.

    An order another certd process runs right now (it holds the certificate's lease: a
    daemon next to a hand-run command, another node) keeps its records; the others are
    removed under the certificate's lease, so no order can start on it meanwhile.
    """
    with session_scope(engine) as session:
        rows = session.exec(
            select(ChallengeRecord, IssuanceAttempt.name)
            .join(IssuanceAttempt, ChallengeRecord.attempt_id == IssuanceAttempt.id, isouter=True)  # type: ignore[arg-type]
        ).all()
    by_certificate: dict[str | None, list[ChallengeRecord]] = {}
    for row, name in rows:
        by_certificate.setdefault(name, []).append(row)
    removed = 0
    for name, group in by_certificate.items():
        if name is None:  # no attempt row: no order can own it
            removed += _remove_leftovers(dns, engine, group, "an interrupted run")
            continue
        try:
            with leases.held(engine, leases.certificate_lease(name), purpose) as lease:
                removed += _remove_leftovers(dns, engine, group, f"an interrupted order of {name}",
                                             lease.fence)
        except leases.LeaseBusy as busy:
            log.info("leaving %d challenge record(s) of %s alone: its order is running (%s)",
                     len(group), name, busy)
    return removed


def _remove_leftovers(dns: DnsProvider, engine: sa.Engine, rows: list[ChallengeRecord], whose: str,
                      fence: leases.Fence | None = None) -> int:
    log.warning("removing %d challenge record(s) left by %s", len(rows), whose)
    return sum(1 for row in rows if remove_challenge_record(dns, engine, row, fence) is None)
