"""Column types shared by all tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from certd.store.sealing import policy_for


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class EncryptedText(sa.types.TypeDecorator[str]):
    """A private key (PEM text) stored encrypted under the store key (certd.store.sealing).

    `purpose` names the column ("issued_certificate.key_pem"); it is bound into each
    ciphertext, so a value copied to another column does not decrypt there. A new table
    with a private key declares its column with this type and is covered by
    `certd db encrypt` and `certd db rotate-key` without more code.
    """

    impl = sa.Text
    cache_ok = True

    def __init__(self, purpose: str) -> None:
        super().__init__()
        self.purpose = purpose

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else policy_for(dialect).seal(value, self.purpose)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else policy_for(dialect).open(value, self.purpose)
