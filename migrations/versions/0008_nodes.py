"""nodes: several certd nodes on one PostgreSQL (presence, per-node deploy state, routed charger
calls) and the NOTIFY triggers that tell every node at once what changed

Revision ID: 0008_nodes
Revises: 0002_chargers, 0004_trust, 0006_rollover
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa
import certd.store.types


revision = '0008_nodes'
# Merges the branches whose tables the triggers watch (chargers, trust bundles, rollover gates).
down_revision = ('0002_chargers', '0004_trust', '0006_rollover')
branch_labels = None
depends_on = None

# Channel `certd`, payload a small JSON object whose "k" says what changed (certd.runtime.cluster).
_FUNCTIONS = {
    "certd_notify_issued": """
        IF TG_OP = 'INSERT' OR NEW.current_id IS DISTINCT FROM OLD.current_id THEN
            PERFORM pg_notify('certd', json_build_object('k', 'issued', 'name', NEW.name,
                                                         'id', NEW.current_id)::text);
        END IF;""",
    "certd_notify_bundle": """
        PERFORM pg_notify('certd', json_build_object('k', 'bundle', 'name', NEW.bundle,
                                                     'seq', NEW.seq)::text);""",
    "certd_notify_charger": """
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('certd', json_build_object('k', 'charger', 'id', OLD.charger_id)::text);
        ELSIF NEW.enabled IS DISTINCT FROM OLD.enabled OR NEW.registration IS DISTINCT FROM OLD.registration
              OR NEW.password_hash IS DISTINCT FROM OLD.password_hash THEN
            PERFORM pg_notify('certd', json_build_object('k', 'charger', 'id', NEW.charger_id)::text);
        END IF;""",
    "certd_notify_gate": """
        IF TG_OP = 'INSERT' OR NEW.served_id IS DISTINCT FROM OLD.served_id
           OR NEW.state IS DISTINCT FROM OLD.state OR NEW.pending_id IS DISTINCT FROM OLD.pending_id THEN
            PERFORM pg_notify('certd', json_build_object('k', 'gate', 'listener', NEW.listener,
                                                         'name', NEW.cert_name)::text);
        END IF;""",
    "certd_notify_call": """
        IF TG_OP = 'INSERT' THEN
            PERFORM pg_notify('certd', json_build_object('k', 'call', 'node', NEW.node, 'id', NEW.id)::text);
        ELSIF NEW.state IN ('done', 'failed') AND NEW.state IS DISTINCT FROM OLD.state THEN
            PERFORM pg_notify('certd', json_build_object('k', 'call-done', 'id', NEW.id)::text);
        END IF;""",
}
_TRIGGERS = (
    ("certd_notify_issued", "managed_certificate", "AFTER INSERT OR UPDATE"),
    ("certd_notify_bundle", "trust_bundle_version", "AFTER INSERT"),
    ("certd_notify_charger", "charger", "AFTER UPDATE OR DELETE"),
    ("certd_notify_gate", "rollover_gate", "AFTER INSERT OR UPDATE"),
    ("certd_notify_call", "charger_call", "AFTER INSERT OR UPDATE"),
)


def upgrade() -> None:
    op.create_table('node',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('address', sa.String(), nullable=True),
    sa.Column('version', sa.String(), nullable=False),
    sa.Column('host', sa.String(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('process', sa.String(), nullable=True),
    sa.Column('started_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('node_deploy',
    sa.Column('node', sa.String(length=100), nullable=False),
    sa.Column('certificate', sa.String(length=128), nullable=False),
    sa.Column('issued_id', sa.Integer(), nullable=True),
    sa.Column('hooks_pending', sa.Boolean(), nullable=False),
    sa.Column('deployed_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('listeners_json', sa.Text(), nullable=False),
    sa.Column('listeners_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('node', 'certificate')
    )
    op.create_table('charger_call',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('charger_id', sa.String(length=48), nullable=False),
    sa.Column('node', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(), nullable=False),
    sa.Column('payload_json', sa.Text(), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('result_json', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('requested_by', sa.String(), nullable=False),
    sa.Column('timeout', sa.Float(), nullable=False),
    sa.Column('created_at', certd.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', certd.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_charger_call_charger_id', 'charger_call', ['charger_id'], unique=False)
    op.create_index('ix_charger_call_node', 'charger_call', ['node'], unique=False)
    if op.get_bind().dialect.name != 'postgresql':
        return  # SQLite: one node, nobody to tell
    for name, body in _FUNCTIONS.items():
        op.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                   f"BEGIN{body}\n    RETURN NULL;\nEND $$")
    for name, table, when in _TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for name, table, _ in _TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        for name in _FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_index('ix_charger_call_node', table_name='charger_call')
    op.drop_index('ix_charger_call_charger_id', table_name='charger_call')
    op.drop_table('charger_call')
    op.drop_table('node_deploy')
    op.drop_table('node')
