"""challenge records name the credential (Cloudflare account) that wrote them

Revision ID: 0008_challenge_account
Revises: 0001_core
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa
import certd.store.types  # noqa: F401


revision = '0008_challenge_account'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('challenge_record', schema=None) as batch_op:
        batch_op.add_column(sa.Column('account', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('challenge_record', schema=None) as batch_op:
        batch_op.drop_column('account')
