"""gray-cloud DNS records: ownership of managed A/AAAA records

Revision ID: 0003_hosts
Revises: 0001_core
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
import certd.store.types


revision = '0003_hosts'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('managed_dns_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('type', sa.String(), nullable=False),
    sa.Column('zone_id', sa.String(), nullable=False),
    sa.Column('zone_name', sa.String(), nullable=False),
    sa.Column('record_id', sa.String(), nullable=True),
    sa.Column('content', sa.String(), nullable=True),
    sa.Column('ttl', sa.Integer(), nullable=True),
    sa.Column('keep', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('adopted', sa.Boolean(), nullable=False),
    sa.Column('original_comment', sa.Text(), nullable=True),
    sa.Column('last_action', sa.String(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_checked_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_changed_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'type', name='uq_managed_dns_record_name_type')
    )
    with op.batch_alter_table('managed_dns_record', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_managed_dns_record_name'), ['name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('managed_dns_record', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_managed_dns_record_name'))

    op.drop_table('managed_dns_record')
