"""Bring every private key in the store under one key, in one transaction.

Used by `certd db encrypt` (plaintext rows and rows under an older key go under
the configured key), `certd db rotate-key` (everything goes under a new key)
and migration 0008 (existing rows are encrypted when a key is configured at
upgrade time). Rows are read and written as raw text, past the column type.

Never corrupts a row: every value is decrypted first (a value the reading
keyring cannot open raises StoreKeyError, and the caller's transaction rolls
back with nothing written), each new ciphertext is decrypted again before it is
written, and the UPDATE only replaces the exact value it read (a row changed
meanwhile by a running node is left for the next run).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlmodel import SQLModel

from certd.store.crypto import Keyring, StoreKeyError, is_encrypted
from certd.store.types import EncryptedText


@dataclass(frozen=True)
class SealedColumn:
    table: str
    key_columns: tuple[str, ...]
    column: str
    purpose: str


@dataclass
class ResealReport:
    """Per purpose ("issued_certificate.key_pem"): how many values were changed / already current."""

    changed: dict[str, int] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # changed by someone else meanwhile

    def lines(self) -> list[str]:
        names = sorted(set(self.changed) | set(self.current) | set(self.skipped))
        return [f"{name}: {self.changed.get(name, 0)} re-encrypted, {self.current.get(name, 0)} "
                f"already under the key" + (f", {self.skipped[name]} changed meanwhile (run again)"
                                            if self.skipped.get(name) else "") for name in names]


def sealed_columns(metadata: sa.MetaData | None = None) -> list[SealedColumn]:
    """Every EncryptedText column of the schema (all tables, also ones added later)."""
    import certd.store.all_tables  # noqa: F401  (registers every table)

    found = []
    for table in (metadata or SQLModel.metadata).sorted_tables:
        keys = tuple(column.name for column in table.primary_key.columns)
        for column in table.columns:
            if isinstance(column.type, EncryptedText):
                found.append(SealedColumn(table.name, keys, column.name, column.type.purpose))
    return found


def _table(column: SealedColumn) -> sa.TableClause:
    return sa.table(column.table, *(sa.column(k) for k in column.key_columns),
                    sa.column(column.column, sa.Text()))


def reseal(conn: sa.Connection, columns: list[SealedColumn], reader: Keyring | None,
           writer: Keyring) -> ResealReport:
    """Decrypt with `reader` (plaintext passes), encrypt under `writer`'s first key; in `conn`'s
    transaction, which the caller commits."""
    report = ResealReport()
    for column in columns:
        table = _table(column)
        value_col = table.c[column.column]
        keys = [table.c[k] for k in column.key_columns]
        for row in conn.execute(sa.select(*keys, value_col)).all():
            stored = row[-1]
            if stored is None:
                continue
            if writer.is_current(stored):
                report.current[column.purpose] = report.current.get(column.purpose, 0) + 1
                continue
            sealed = encrypt_checked(writer, _open(stored, column.purpose, reader), column.purpose)
            where = [k == v for k, v in zip(keys, row[:-1])] + [value_col == stored]
            result = conn.execute(sa.update(table).where(*where).values({column.column: sealed}))
            bucket = report.changed if result.rowcount == 1 else report.skipped
            bucket[column.purpose] = bucket.get(column.purpose, 0) + 1
    return report


def unseal(conn: sa.Connection, columns: list[SealedColumn], reader: Keyring | None) -> int:
    """Write every value back as plaintext (migration downgrade); returns how many changed."""
    changed = 0
    for column in columns:
        table = _table(column)
        value_col = table.c[column.column]
        keys = [table.c[k] for k in column.key_columns]
        for row in conn.execute(sa.select(*keys, value_col)).all():
            stored = row[-1]
            if stored is None or not is_encrypted(stored):
                continue
            plain = _open(stored, column.purpose, reader)
            where = [k == v for k, v in zip(keys, row[:-1])] + [value_col == stored]
            changed += conn.execute(sa.update(table).where(*where).values({column.column: plain})).rowcount
    return changed


def count_plaintext(conn: sa.Connection, columns: list[SealedColumn]) -> int:
    """How many private keys are stored unencrypted."""
    total = 0
    for column in columns:
        table = _table(column)
        value_col = table.c[column.column]
        total += conn.execute(sa.select(sa.func.count()).select_from(table).where(
            value_col.is_not(None), sa.not_(value_col.startswith("certd-enc:")))).scalar_one()
    return total


def encrypt_checked(writer: Keyring, plain: str, purpose: str, what: str | None = None) -> str:
    """`plain` encrypted under `writer`'s first key, read back before anyone writes it: a value
    that does not decrypt is never written (`what` names it in the error; default `purpose`)."""
    sealed = writer.encrypt(plain, purpose)
    if writer.decrypt(sealed, purpose) != plain:
        raise StoreKeyError(f"{what or purpose}: the new ciphertext did not decrypt; nothing written")
    return sealed


def _open(stored: str, purpose: str, reader: Keyring | None) -> str:
    if not is_encrypted(stored):
        return stored
    if reader is None:
        raise StoreKeyError(f"{purpose} holds encrypted values but no store key is configured to read "
                            "them ([store] key_file / key_env); nothing was written")
    return reader.decrypt(stored, purpose)
