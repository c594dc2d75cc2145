"""value indexes: runs/search sorted by a metric, param or tag walks them instead of sorting every run

Revision ID: 0009
Revises: 0008

On PostgreSQL a btree entry must stay under about 2.7 kB, and params and tags take values of
thousands of characters: there the value index holds values of up to 256 characters, and a
second, small index finds the keys that have longer ones (search sorts those without the index).
Building the indexes takes a while on a large store, and PostgreSQL blocks writes to these tables
meanwhile (CREATE INDEX CONCURRENTLY cannot run inside the migration's transaction).
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == 'postgresql'
    op.create_index('ix_latest_metrics_key_value', 'latest_metrics', ['key', 'is_nan', 'value'], unique=False)
    for table in ('params', 'tags'):
        op.create_index(f'ix_{table}_key_value', table, ['key', 'value'], unique=False,
                        postgresql_where=sa.text('length(value) <= 256'))
        if postgresql:
            op.create_index(f'ix_{table}_key_long', table, ['key'], unique=False,
                            postgresql_where=sa.text('length(value) > 256'))


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == 'postgresql'
    for table in ('params', 'tags'):
        if postgresql:
            op.drop_index(f'ix_{table}_key_long', table_name=table)
        op.drop_index(f'ix_{table}_key_value', table_name=table)
    op.drop_index('ix_latest_metrics_key_value', table_name='latest_metrics')
