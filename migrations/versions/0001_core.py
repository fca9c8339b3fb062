"""core tables: account, certificates, attempts, challenge records

Revision ID: 0001_core
Revises: 
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
import certd.store.types


revision = '0001_core'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('acme_account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('directory_url', sa.String(length=512), nullable=False),
    sa.Column('key_pem', sa.Text(), nullable=False),
    sa.Column('registration_json', sa.Text(), nullable=True),
    sa.Column('contact', sa.String(), nullable=True),
    sa.Column('created_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('directory_url')
    )
    op.create_table('issued_certificate',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('domains', sa.String(), nullable=False),
    sa.Column('key_type', sa.String(), nullable=False),
    sa.Column('serial', sa.String(), nullable=False),
    sa.Column('not_before', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('not_after', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('issuer', sa.String(), nullable=False),
    sa.Column('cert_pem', sa.Text(), nullable=False),
    sa.Column('chain_pem', sa.Text(), nullable=False),
    sa.Column('key_pem', sa.Text(), nullable=False),
    sa.Column('chain_fingerprints', sa.Text(), nullable=False),
    sa.Column('alternate_chains', sa.Text(), nullable=False),
    sa.Column('profile', sa.String(), nullable=True),
    sa.Column('directory_url', sa.String(), nullable=False),
    sa.Column('issued_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('issued_certificate', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_issued_certificate_name'), ['name'], unique=False)

    op.create_table('issuance_attempt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('started_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('certificate_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['certificate_id'], ['issued_certificate.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('issuance_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_issuance_attempt_name'), ['name'], unique=False)

    op.create_table('managed_certificate',
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('current_id', sa.Integer(), nullable=True),
    sa.Column('deployed_id', sa.Integer(), nullable=True),
    sa.Column('hooks_pending', sa.Boolean(), nullable=False),
    sa.Column('failure_count', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('next_check_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('renew_reason', sa.String(), nullable=True),
    sa.Column('renew_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ari_checked_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['current_id'], ['issued_certificate.id'], ),
    sa.ForeignKeyConstraint(['deployed_id'], ['issued_certificate.id'], ),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('challenge_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('attempt_id', sa.Integer(), nullable=True),
    sa.Column('zone_id', sa.String(), nullable=False),
    sa.Column('zone_name', sa.String(), nullable=False),
    sa.Column('fqdn', sa.String(), nullable=False),
    sa.Column('value', sa.String(), nullable=False),
    sa.Column('record_id', sa.String(), nullable=True),
    sa.Column('created_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['attempt_id'], ['issuance_attempt.id'], ),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('challenge_record')
    op.drop_table('managed_certificate')
    with op.batch_alter_table('issuance_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_issuance_attempt_name'))

    op.drop_table('issuance_attempt')
    with op.batch_alter_table('issued_certificate', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_issued_certificate_name'))

    op.drop_table('issued_certificate')
    op.drop_table('acme_account')
