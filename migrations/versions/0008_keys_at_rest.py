"""keys at rest: private keys already stored are encrypted when a store key is configured

No schema change: the columns stay TEXT, an encrypted value carries the prefix
`certd-enc:v1:`. Without a key at upgrade time nothing is done here; `certd db
encrypt` encrypts the existing rows once a key is configured.

Revision ID: 0008_keys_at_rest
Revises: 0001_core
Create Date: 2026-12-01
"""
from alembic import op

from certd.store.rekey import SealedColumn, reseal, unseal
from certd.store.sealing import policy_for


revision = '0008_keys_at_rest'
down_revision = '0001_core'
branch_labels = None
depends_on = None

# The columns as this revision knows them (later tables with keys are encrypted from their start).
COLUMNS = [
    SealedColumn("acme_account", ("id",), "key_pem", "acme_account.key_pem"),
    SealedColumn("issued_certificate", ("id",), "key_pem", "issued_certificate.key_pem"),
]


def upgrade() -> None:
    bind = op.get_bind()
    keyring = policy_for(bind.dialect).keyring
    if keyring is not None:
        reseal(bind, COLUMNS, keyring, keyring)


def downgrade() -> None:
    bind = op.get_bind()
    unseal(bind, COLUMNS, policy_for(bind.dialect).keyring)
