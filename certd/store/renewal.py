"""What the renewal scheduler remembers per certificate beyond `ManagedCertificate`.

The CA's ARI answer (window, the time picked in it, when to ask again) and the
retry state of deploy hooks. Kept in the store so that a restart neither asks
the CA again before its Retry-After nor forgets that a hook still has to run.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from certd.store.types import UTCDateTime, utcnow


def _ts(nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(UTCDateTime(), nullable=nullable)


class RenewalState(SQLModel, table=True):
    __tablename__ = "renewal_state"

    name: str = Field(primary_key=True)  # the certificate name (ManagedCertificate.name)
    # RFC 9773 certID of the certificate the ARI fields below describe; None: never asked.
    ari_cert_id: str | None = None
    # False when the CA's directory had no renewalInfo at the last look; None: not looked yet.
    ari_supported: bool | None = None
    ari_window_start: dt.datetime | None = Field(default=None, sa_column=_ts())
    ari_window_end: dt.datetime | None = Field(default=None, sa_column=_ts())
    ari_renew_at: dt.datetime | None = Field(default=None, sa_column=_ts())  # picked inside the window
    ari_next_check_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    ari_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # Failed runs of the deploy hooks (or redeploys) in a row; drives their retry backoff.
    deploy_failures: int = 0
    deploy_retry_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    last_failure_at: dt.datetime | None = Field(default=None, sa_column=_ts())
    # Set while a certificate in its last tenth of life keeps failing (a "recovered" notice follows).
    alarm_raised: bool = False
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
