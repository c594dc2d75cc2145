"""statistics on the length of param and tag values: PostgreSQL estimates the value indexes' reach

Revision ID: 0010
Revises: 0009

Migration 0009's value indexes on params and tags hold values of up to 256 characters, so every
search that reads them says ``length(value) <= 256``. Without statistics on that expression
PostgreSQL guesses a third of the rows pass it, underestimates a filter such as
``params.lr = '0.01'`` threefold, and joins every run of the experiment where walking the metric
index in order would stop after a page (22 ms against 10 ms for 10,000 runs). Expression
statistics (PostgreSQL 14 and later) tell it nearly every value passes; ANALYZE, or autovacuum,
fills them. SQLite needs none.
"""
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

TABLES = ('params', 'tags')


def _supported() -> bool:
    bind = op.get_bind()
    return bind.dialect.name == 'postgresql' and bind.dialect.server_version_info >= (14,)


def upgrade() -> None:
    if _supported():
        for table in TABLES:
            op.execute(f'CREATE STATISTICS IF NOT EXISTS st_{table}_value_length ON (length(value)) FROM {table}')
            op.execute(f'ANALYZE {table}')


def downgrade() -> None:
    if _supported():
        for table in TABLES:
            op.execute(f'DROP STATISTICS IF EXISTS st_{table}_value_length')
