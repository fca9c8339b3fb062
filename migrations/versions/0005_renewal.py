"""renewal scheduler state: ARI windows and deploy retries per certificate

Revision ID: 0005_renewal
Revises: 0001_core
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
import certd.store.types


revision = '0005_renewal'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('renewal_state',
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('ari_cert_id', sa.String(), nullable=True),
    sa.Column('ari_supported', sa.Boolean(), nullable=True),
    sa.Column('ari_window_start', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ari_window_end', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ari_renew_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ari_next_check_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ari_error', sa.Text(), nullable=True),
    sa.Column('deploy_failures', sa.Integer(), nullable=False),
    sa.Column('deploy_retry_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_failure_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('alarm_raised', sa.Boolean(), nullable=False),
    sa.Column('updated_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('renewal_state')
