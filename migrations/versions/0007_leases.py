"""leases: one certd process at a time per certificate and per periodic job

Revision ID: 0007_leases
Revises: 0001_core
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
import certd.store.types


revision = '0007_leases'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('leases',
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('holder', sa.String(), nullable=False),
    sa.Column('purpose', sa.String(), nullable=False),
    sa.Column('token', sa.String(), nullable=False),
    sa.Column('node', sa.String(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('acquired_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('leases')
