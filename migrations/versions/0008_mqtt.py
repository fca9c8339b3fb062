"""mqtt: the daemon's broker connection per node, and each device's acknowledged bundle version

Revision ID: 0008_mqtt
Revises: 0001_core
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa
import certd.store.types


revision = '0008_mqtt'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mqtt_connection',
    sa.Column('node', sa.String(length=128), nullable=False),
    sa.Column('broker', sa.String(), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('since', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_connected_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('hostname', sa.String(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('updated_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('node')
    )
    op.create_table('mqtt_device_ack',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('registry_name', sa.String(length=64), nullable=False),
    sa.Column('bundle', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=128), nullable=False),
    sa.Column('flavour', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('acked_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('first_seen_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('acks', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('registry_name', 'bundle', 'device_id', name='uq_mqtt_device_ack_device')
    )
    with op.batch_alter_table('mqtt_device_ack', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mqtt_device_ack_registry_name'), ['registry_name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mqtt_device_ack', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mqtt_device_ack_registry_name'))
    op.drop_table('mqtt_device_ack')
    op.drop_table('mqtt_connection')
