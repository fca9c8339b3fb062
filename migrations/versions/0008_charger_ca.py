"""charger CA: CA certificates, charger certificates, CSR requests, renewal state

Revision ID: 0008_charger_ca
Revises: 0002_chargers
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa
import certd.store.types


revision = '0008_charger_ca'
down_revision = '0002_chargers'
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, certd.store.types.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table('charger_ca_cert',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('parent_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('subject', sa.String(), nullable=False),
    sa.Column('cert_pem', sa.Text(), nullable=False),
    _ts('not_after', nullable=False),
    sa.Column('key_storage', sa.String(), nullable=False),
    sa.Column('key_path', sa.String(), nullable=True),
    sa.Column('key_sealed', sa.LargeBinary(), nullable=True),
    _ts('created_at', nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('fingerprint')
    )
    op.create_table('charger_certificate',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('charger_id', sa.String(length=48), nullable=False),
    sa.Column('serial', sa.String(length=48), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('ca_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('key_type', sa.String(), nullable=False),
    _ts('not_before', nullable=False),
    _ts('not_after', nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('source', sa.String(), nullable=False),
    sa.Column('delivery', sa.String(), nullable=False),
    sa.Column('delivery_attempts', sa.Integer(), nullable=False),
    _ts('next_delivery_at'),
    sa.Column('delivery_detail', sa.String(), nullable=True),
    sa.Column('cert_pem', sa.Text(), nullable=False),
    _ts('issued_at', nullable=False),
    _ts('first_used_at'),
    _ts('revoked_at'),
    sa.Column('revoke_reason', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('serial'),
    sa.UniqueConstraint('fingerprint')
    )
    with op.batch_alter_table('charger_certificate', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_charger_certificate_charger_id'), ['charger_id'], unique=False)
    op.create_table('charger_csr_request',
    sa.Column('id', sa.Integer(), nullable=False),
    _ts('at', nullable=False),
    sa.Column('charger_id', sa.String(length=48), nullable=False),
    sa.Column('listener', sa.String(), nullable=True),
    sa.Column('ocpp_version', sa.String(), nullable=True),
    sa.Column('csr_sha256', sa.String(), nullable=True),
    sa.Column('key_type', sa.String(), nullable=True),
    sa.Column('decision', sa.String(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('serial', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('charger_csr_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_charger_csr_request_charger_id'), ['charger_id'], unique=False)
    op.create_table('charger_cert_renewal',
    sa.Column('charger_id', sa.String(length=48), nullable=False),
    _ts('requested_at'),
    sa.Column('attempts', sa.Integer(), nullable=False),
    _ts('next_attempt_at'),
    _ts('last_attempt_at'),
    sa.Column('last_result', sa.String(), nullable=True),
    sa.Column('alerted_serial', sa.String(), nullable=True),
    sa.Column('move_pending', sa.Boolean(), nullable=False),
    _ts('updated_at', nullable=False),
    sa.PrimaryKeyConstraint('charger_id')
    )


def downgrade() -> None:
    op.drop_table('charger_cert_renewal')
    with op.batch_alter_table('charger_csr_request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_charger_csr_request_charger_id'))
    op.drop_table('charger_csr_request')
    with op.batch_alter_table('charger_certificate', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_charger_certificate_charger_id'))
    op.drop_table('charger_certificate')
    op.drop_table('charger_ca_cert')
