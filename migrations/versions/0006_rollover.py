"""rollover: per-listener gates and per-charger confirmed CA roots

Revision ID: 0006_rollover
Revises: 0001_core
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa
import certd.store.types


revision = '0006_rollover'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rollover_gate',
    sa.Column('listener', sa.String(length=128), nullable=False),
    sa.Column('cert_name', sa.String(length=128), nullable=False),
    sa.Column('bundle', sa.String(), nullable=True),
    sa.Column('served_id', sa.Integer(), nullable=True),
    sa.Column('pending_id', sa.Integer(), nullable=True),
    sa.Column('decided_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('required_json', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('gate_share', sa.Float(), nullable=False),
    sa.Column('deadline_days', sa.Float(), nullable=False),
    sa.Column('started_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('deadline_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('switched_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('switch_reason', sa.Text(), nullable=True),
    sa.Column('forced', sa.Boolean(), nullable=False),
    sa.Column('lacking_json', sa.Text(), nullable=False),
    sa.Column('updated_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['decided_id'], ['issued_certificate.id'], ),
    sa.ForeignKeyConstraint(['pending_id'], ['issued_certificate.id'], ),
    sa.ForeignKeyConstraint(['served_id'], ['issued_certificate.id'], ),
    sa.PrimaryKeyConstraint('listener', 'cert_name')
    )
    op.create_table('rollover_charger',
    sa.Column('charger_id', sa.String(length=48), nullable=False),
    sa.Column('listener', sa.String(length=128), nullable=True),
    sa.Column('ocpp_version', sa.String(), nullable=True),
    sa.Column('held_json', sa.Text(), nullable=False),
    sa.Column('other_held', sa.Integer(), nullable=False),
    sa.Column('bundles_json', sa.Text(), nullable=False),
    sa.Column('confirmed_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('last_result', sa.String(), nullable=True),
    sa.Column('last_reason', sa.Text(), nullable=True),
    sa.Column('last_attempt_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('installs_sent', sa.Integer(), nullable=False),
    sa.Column('store_max', sa.Integer(), nullable=True),
    sa.Column('store_used', sa.Integer(), nullable=True),
    sa.Column('additional_root_check', sa.Boolean(), nullable=True),
    sa.Column('facts_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('charger_id')
    )
    with op.batch_alter_table('rollover_charger', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rollover_charger_listener'), ['listener'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rollover_charger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rollover_charger_listener'))
    op.drop_table('rollover_charger')
    op.drop_table('rollover_gate')
