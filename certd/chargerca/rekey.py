"""Re-seal the charger CA keys in the store, inside `certd db rotate-key` / `encrypt`'s transaction.

`charger_ca_cert.key_sealed` is not an EncryptedText column (certd.store.rekey's):
its associated data is per row (the CA certificate's fingerprint) and a row may be
under the store key or under a key-encryption key of the CA's own
(certd.chargerca.keystore). So the CA rows get this step of their own, run on the
caller's connection, so everything commits or nothing does. As for the other keys:
every value is opened before anything is written (a key that does not open raises,
naming the setting), each new ciphertext is opened again and compared before it is
written, and the UPDATE replaces only the exact bytes it read.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from certd.chargerca import keystore
from certd.store.charger_ca import ChargerCaCert
from certd.store.crypto import Keyring, StoreKeyError
from certd.store.rekey import encrypt_checked

_CA = ChargerCaCert.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class KekChange:
    """Re-seal CA keys under a KEK of their own: the current KEK (and its setting) and the new one."""

    old: bytes | None
    old_setting: str | None
    new: bytes


@dataclass
class CaKeyReport:
    changed: int = 0  # re-encrypted under the new store key
    current: int = 0  # already under it
    kek_changed: int = 0  # re-sealed under the new key-encryption key
    kek_kept: int = 0  # under the CA's own key-encryption key, left as they are
    skipped: int = 0  # changed by someone else meanwhile

    def lines(self) -> list[str]:
        found = []
        if self.changed or self.current:
            found.append(f"charger_ca_cert.key_sealed: {self.changed} re-encrypted, {self.current} "
                         "already under the key")
        if self.kek_changed:
            found.append(f"charger_ca_cert.key_sealed: {self.kek_changed} re-sealed under the new charger CA "
                         "key-encryption key")
        if self.kek_kept:
            found.append(f"charger_ca_cert.key_sealed: {self.kek_kept} under the charger CA's own key-encryption "
                         "key, not changed (rotate it with --new-charger-ca-kek-file or --new-charger-ca-kek-env)")
        if self.skipped:
            found.append(f"charger_ca_cert.key_sealed: {self.skipped} changed meanwhile (run again)")
        return found


def reseal_ca_keys(conn: sa.Connection, reader: Keyring | None, writer: Keyring | None,
                   kek: KekChange | None) -> CaKeyReport:
    """Store-key rows: from `reader` to `writer`'s first key (None: left); own-KEK rows: to `kek.new`."""
    report = CaKeyReport()
    rows = conn.execute(sa.select(_CA.c.id, _CA.c.fingerprint, _CA.c.key_sealed)
                        .where(_CA.c.key_sealed.is_not(None)).order_by(_CA.c.id)).all()
    for row_id, fingerprint, stored in rows:
        stored = bytes(stored)
        if keystore.under_store_key(stored):
            sealed = _to_store_key(stored, fingerprint, reader, writer, report)
        else:
            sealed = _to_new_kek(stored, fingerprint, kek, report)
        if sealed is None:
            continue
        result = conn.execute(sa.update(_CA).where(_CA.c.id == row_id, _CA.c.key_sealed == stored)
                              .values(key_sealed=sealed))
        if result.rowcount != 1:
            report.skipped += 1
    return report


def _to_store_key(stored: bytes, fingerprint: str, reader: Keyring | None, writer: Keyring | None,
                  report: CaKeyReport) -> bytes | None:
    purpose = keystore.purpose(fingerprint)
    text = stored.decode("ascii")
    if writer is None:
        return None
    if writer.is_current(text):
        report.current += 1
        return None
    if reader is None:
        raise StoreKeyError("the charger CA key is encrypted in the store but no store key is configured to "
                            "read it ([store] key_file / key_env); nothing was written")
    sealed = encrypt_checked(writer, reader.decrypt(text, purpose), purpose, "charger_ca_cert.key_sealed")
    report.changed += 1
    return sealed.encode("ascii")


def _to_new_kek(stored: bytes, fingerprint: str, kek: KekChange | None, report: CaKeyReport) -> bytes | None:
    if kek is None:
        report.kek_kept += 1
        return None
    if kek.old is None:
        raise keystore.CaKeyError("the charger CA key is sealed under a key-encryption key of its own: set "
                                  "[ocpp.charger_ca] key_encryption_key_env or key_encryption_key_file to "
                                  "the current one; nothing was written")
    associated = fingerprint.encode()
    plain = keystore.unseal(stored, kek.old, associated, kek.old_setting or "the configured key-encryption key")
    sealed = keystore.seal(plain, kek.new, associated)
    if keystore.unseal(sealed, kek.new, associated) != plain:
        raise keystore.CaKeyError("charger_ca_cert.key_sealed: the new ciphertext did not decrypt; nothing written")
    report.kek_changed += 1
    return sealed
