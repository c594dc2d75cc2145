"""experiments belong to projects: a project column, names unique per project

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def _experiments_without_name_unique() -> sa.Table:
    # SQLite's batch mode rebuilds the table; 0001 left the name constraint unnamed, so the
    # table is described here without it rather than reflected.
    return sa.Table(
        'experiments', sa.MetaData(),
        sa.Column('experiment_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('name', sa.String(length=500), nullable=False),
        sa.Column('artifact_location', sa.Text(), nullable=False),
        sa.Column('lifecycle_stage', sa.String(length=32), nullable=False),
        sa.Column('creation_time', sa.BigInteger(), nullable=False),
        sa.Column('last_update_time', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('experiment_id'),
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('experiments', copy_from=_experiments_without_name_unique()) as batch_op:
            batch_op.add_column(sa.Column('project', sa.String(length=64), server_default='default', nullable=False))
            batch_op.create_unique_constraint('uq_experiments_project_name', ['project', 'name'])
    else:
        op.drop_constraint('experiments_name_key', 'experiments', type_='unique')
        op.add_column('experiments', sa.Column('project', sa.String(length=64), server_default='default', nullable=False))
        op.create_unique_constraint('uq_experiments_project_name', 'experiments', ['project', 'name'])


def downgrade() -> None:
    with op.batch_alter_table('experiments') as batch_op:
        batch_op.drop_constraint('uq_experiments_project_name', type_='unique')
        batch_op.drop_column('project')
        batch_op.create_unique_constraint('experiments_name_key', ['name'])
