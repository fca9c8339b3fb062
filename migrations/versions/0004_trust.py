"""trust: CA certificates, chain links, bundle versions, registry outbox

Revision ID: 0004_trust
Revises: 0001_core
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
import certd.store.types


revision = '0004_trust'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('trust_ca_certificate',
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('issuer', sa.Text(), nullable=False),
    sa.Column('spki_sha256', sa.String(length=64), nullable=False),
    sa.Column('not_before', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('not_after', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('self_signed', sa.Boolean(), nullable=False),
    sa.Column('pem', sa.Text(), nullable=False),
    sa.Column('first_seen_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('fingerprint')
    )
    op.create_table('trust_bundle_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('bundle', sa.String(), nullable=False),
    sa.Column('flavour', sa.String(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('previous_seq', sa.Integer(), nullable=True),
    sa.Column('previous_sha256', sa.String(length=64), nullable=True),
    sa.Column('pem', sa.Text(), nullable=False),
    sa.Column('manifest_json', sa.Text(), nullable=False),
    sa.Column('diff_json', sa.Text(), nullable=False),
    sa.Column('notes_json', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('bundle', 'flavour', 'seq', name='uq_trust_bundle_version_seq')
    )
    with op.batch_alter_table('trust_bundle_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trust_bundle_version_bundle'), ['bundle'], unique=False)

    op.create_table('trust_chain_link',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('issued_id', sa.Integer(), nullable=False),
    sa.Column('anchor_set', sa.String(), nullable=False),
    sa.Column('chain_index', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(), nullable=False),
    sa.Column('served', sa.Boolean(), nullable=False),
    sa.Column('in_path', sa.Boolean(), nullable=False),
    sa.Column('recorded_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['fingerprint'], ['trust_ca_certificate.fingerprint'], ),
    sa.ForeignKeyConstraint(['issued_id'], ['issued_certificate.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('issued_id', 'anchor_set', 'chain_index', 'position',
                        name='uq_trust_chain_link_position')
    )
    with op.batch_alter_table('trust_chain_link', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trust_chain_link_issued_id'), ['issued_id'], unique=False)

    op.create_table('trust_delivery',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('registry_name', sa.String(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['version_id'], ['trust_bundle_version.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('registry_name', 'idempotency_key', name='uq_trust_delivery_key')
    )
    with op.batch_alter_table('trust_delivery', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trust_delivery_registry_name'), ['registry_name'], unique=False)

    op.create_table('trust_delivery_attempt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('started_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['trust_delivery.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('trust_delivery_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trust_delivery_attempt_delivery_id'), ['delivery_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('trust_delivery_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trust_delivery_attempt_delivery_id'))
    op.drop_table('trust_delivery_attempt')
    with op.batch_alter_table('trust_delivery', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trust_delivery_registry_name'))
    op.drop_table('trust_delivery')
    with op.batch_alter_table('trust_chain_link', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trust_chain_link_issued_id'))
    op.drop_table('trust_chain_link')
    with op.batch_alter_table('trust_bundle_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trust_bundle_version_bundle'))
    op.drop_table('trust_bundle_version')
    op.drop_table('trust_ca_certificate')
