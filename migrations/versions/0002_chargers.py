"""charger registry and charger audit events

Revision ID: 0002_chargers
Revises: 0001_core
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
import certd.store.types


revision = '0002_chargers'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('charger',
    sa.Column('charger_id', sa.String(length=48), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('registration', sa.String(), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=True),
    sa.Column('heartbeat_class', sa.String(), nullable=False),
    sa.Column('ocpp_version', sa.String(), nullable=True),
    sa.Column('vendor', sa.String(), nullable=True),
    sa.Column('model', sa.String(), nullable=True),
    sa.Column('firmware_version', sa.String(), nullable=True),
    sa.Column('serial_number', sa.String(), nullable=True),
    sa.Column('first_seen', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_seen', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('connected_node', sa.String(), nullable=True),
    sa.Column('connected_since', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_address', sa.String(), nullable=True),
    sa.Column('created_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('charger_id')
    )
    op.create_table('charger_audit_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('charger_id', sa.String(length=64), nullable=True),
    sa.Column('address', sa.String(), nullable=True),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('charger_audit_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_charger_audit_event_charger_id'), ['charger_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('charger_audit_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_charger_audit_event_charger_id'))
    op.drop_table('charger_audit_event')
    op.drop_table('charger')
