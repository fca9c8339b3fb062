"""Gray-cloud sync and challenge records through the in-memory provider (`[dns] provider = "memory"`).

The same code paths the Cloudflare tests drive (certd.dns.sync, certd.dns.challenges,
a real SQLite/PostgreSQL store), with the provider certd opens from config: proof that
nothing above the DnsProvider seam depends on Cloudflare.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from certd.config import Config, parse_config
from certd.dns import memory
from certd.dns.challenges import CHALLENGE_COMMENT, CHALLENGE_TTL, Dns01Records, cleanup_leftover_records
from certd.dns.memory import MemoryDNS
from certd.dns.provider import DnsRecord
from certd.dns.registry import open_dns
from certd.dns.sync import SyncReport, sync_hosts
from certd.sandbox.certd_config import toml_str
from certd.store.db import make_engine, session_scope, upgrade
from certd.store.hosts import ManagedDnsRecord, all_rows
from certd.store.models import ChallengeRecord, IssuanceAttempt
from tests.dns_records.conftest import WALLBOX

NAME = "local.example.com"
MARKER = "managed by certd"


@dataclass
class MemoryWorld:
    engine: sa.Engine
    state_dir: Path

    def config(self, hosts_toml: str = "", extra: str = "") -> Config:
        return parse_config(f'state_dir = {toml_str(self.state_dir)}\n[dns]\nprovider = "memory"\n'
                            f"{extra}\n{hosts_toml}")

    @property
    def dns(self) -> MemoryDNS:
        opened = open_dns(self.config())
        assert isinstance(opened, MemoryDNS)
        return opened

    def run(self, config: Config, *, apply: bool = True) -> SyncReport:
        return sync_hosts(config, self.engine, open_dns(config), apply=apply)

    def records(self, name: str | None = None) -> list[DnsRecord]:
        return [r for r in self.dns.records() if name is None or r.name == name]

    def rows(self) -> list[ManagedDnsRecord]:
        with session_scope(self.engine) as session:
            return all_rows(session)

    def challenge_rows(self) -> list[ChallengeRecord]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(ChallengeRecord)).all())


@pytest.fixture
def mem(db_url: str, tmp_path: Path) -> Iterator[MemoryWorld]:
    upgrade(db_url)
    engine = make_engine(db_url)
    world = MemoryWorld(engine, tmp_path / "state")
    memory.for_config(world.config()).add_zone("example.com")
    try:
        yield world
    finally:
        engine.dispose()


def kinds(report: SyncReport) -> list[tuple[str, str, str]]:
    return [(a.name, a.type, a.kind) for a in report.plan.actions]


def test_sync_creates_updates_repairs_and_deletes_a_gray_record(mem: MemoryWorld) -> None:
    planned = mem.run(mem.config(WALLBOX), apply=False)
    assert kinds(planned) == [(NAME, "A", "create")] and planned.outcome == "changed"
    assert mem.records() == [] and mem.rows() == []

    synced = mem.run(mem.config(WALLBOX))
    assert synced.outcome == "changed" and [r.outcome for r in synced.results] == ["applied"]
    [record] = mem.records(NAME)
    assert (record.type, record.content, record.proxied, record.ttl, record.comment) == (
        "A", "192.168.1.100", False, 1, MARKER)
    [row] = mem.rows()
    assert (row.record_id, row.content, row.state) == (record.id, "192.168.1.100", "present")
    assert mem.run(mem.config(WALLBOX)).outcome == "no changes"

    moved = mem.run(mem.config(WALLBOX.replace("192.168.1.100", "192.168.1.101")))
    assert kinds(moved) == [(NAME, "A", "update")]
    [updated] = mem.records(NAME)
    assert (updated.id, updated.content) == (record.id, "192.168.1.101")

    # Someone turns the orange cloud on: the next sync turns it off again, in place.
    zone = mem.dns.find_zone(NAME)
    mem.dns.update_record(zone, updated, proxied=True)
    repaired = mem.run(mem.config(WALLBOX.replace("192.168.1.100", "192.168.1.101")))
    assert kinds(repaired) == [(NAME, "A", "repair")] and repaired.outcome == "changed"
    [gray] = mem.records(NAME)
    assert gray.proxied is False and gray.id == record.id

    removed = mem.run(mem.config(""))
    assert kinds(removed) == [(NAME, "A", "delete")] and removed.outcome == "changed"
    assert mem.records() == [] and mem.rows() == []


def test_foreign_records_at_the_name_are_a_conflict_left_untouched(mem: MemoryWorld) -> None:
    zone = mem.dns.find_zone(NAME)
    foreign = mem.dns.create_record(zone, type="A", name=NAME, content="192.168.1.50", comment="the old NAS")
    report = mem.run(mem.config(WALLBOX))
    assert kinds(report) == [(NAME, "A", "conflict")] and report.outcome == "failed"
    assert "192.168.1.50" in report.plan.actions[0].reason
    assert mem.records() == [foreign] and mem.rows() == []


def test_a_host_outside_every_zone_is_an_error_naming_the_zones(mem: MemoryWorld) -> None:
    report = mem.run(mem.config('[[hosts]]\nname = "nas.example.org"\naddress = "192.168.1.7"\n'))
    [action] = report.plan.actions
    assert action.kind == "error" and "example.com" in action.reason and report.outcome == "failed"
    assert mem.records() == []


def test_challenge_records_are_created_tracked_and_removed(mem: MemoryWorld) -> None:
    with session_scope(mem.engine) as session:
        attempt = IssuanceAttempt(name="web")
        session.add(attempt)
        session.flush()
        attempt_id = attempt.id
    records = Dns01Records(mem.dns, mem.engine, attempt_id)
    # A name and its wildcard share one TXT name with two values.
    for value in ("a" * 43, "b" * 43):
        assert records.present("_acme-challenge.example.com", value).name == "example.com"
    txt = mem.records("_acme-challenge.example.com")
    assert sorted(r.content for r in txt) == ["a" * 43, "b" * 43]
    assert {(r.type, r.ttl, r.comment) for r in txt} == {("TXT", CHALLENGE_TTL, CHALLENGE_COMMENT)}
    assert sorted(row.record_id or "" for row in mem.challenge_rows()) == sorted(r.id for r in txt)

    assert records.cleanup() == []
    assert mem.records() == [] and mem.challenge_rows() == []


def test_leftovers_of_an_interrupted_run_are_removed_at_the_next_start(mem: MemoryWorld) -> None:
    zone = mem.dns.find_zone("example.com")
    keep = mem.dns.create_record(zone, type="TXT", name="_acme-challenge.example.com", content="not ours")
    # Crashed after the create answered (record id stored) and before it answered (no id).
    answered = mem.dns.create_record(zone, type="TXT", name="_acme-challenge.example.com", content="c" * 43)
    mem.dns.create_record(zone, type="TXT", name="_acme-challenge.local.example.com", content="d" * 43)
    with session_scope(mem.engine) as session:
        attempt = IssuanceAttempt(name="web")
        session.add(attempt)
        session.flush()
        session.add(ChallengeRecord(attempt_id=attempt.id, zone_id=zone.id, zone_name=zone.name,
                                    fqdn="_acme-challenge.example.com", value="c" * 43, record_id=answered.id))
        session.add(ChallengeRecord(attempt_id=None, zone_id=zone.id, zone_name=zone.name,
                                    fqdn="_acme-challenge.local.example.com", value="d" * 43))

    assert cleanup_leftover_records(mem.dns, mem.engine, "certd test") == 2
    assert mem.records() == [keep] and mem.challenge_rows() == []
    assert cleanup_leftover_records(mem.dns, mem.engine, "certd test") == 0
