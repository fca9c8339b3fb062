"""Ownership of gray-cloud DNS records: which Cloudflare records certd manages.

One row per (name, type). A row is written BEFORE the Cloudflare call that
creates or deletes a record (state "creating" / "deleting"), so a crash or an
API failure at any point leaves a row the next sync uses to finish the job:
a created record is found again by its marker comment, a delete is retried.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, select

from certd.store.types import UTCDateTime, utcnow

STATES = ("creating", "present", "deleting")


def _ts(nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(UTCDateTime(), nullable=nullable)


class ManagedDnsRecord(SQLModel, table=True):
    __tablename__ = "managed_dns_record"
    __table_args__ = (sa.UniqueConstraint("name", "type", name="uq_managed_dns_record_name_type"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    type: str  # "A" or "AAAA"
    zone_id: str
    zone_name: str
    record_id: str | None = None  # None until Cloudflare answered the create
    content: str | None = None  # the content certd last wrote or saw
    ttl: int | None = None
    # The host's `keep` at the last sync: decides delete vs release once the host leaves config.
    keep: bool = False
    state: str = "present"  # creating | present | deleting
    adopted: bool = False
    original_comment: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    last_action: str | None = None
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts())
    last_checked_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_changed_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))


def all_rows(session: Session) -> list[ManagedDnsRecord]:
    return list(session.exec(
        select(ManagedDnsRecord).order_by(ManagedDnsRecord.name, ManagedDnsRecord.type)
    ))


def find_row(session: Session, name: str, rtype: str) -> ManagedDnsRecord | None:
    return session.exec(
        select(ManagedDnsRecord).where(ManagedDnsRecord.name == name, ManagedDnsRecord.type == rtype)
    ).first()
