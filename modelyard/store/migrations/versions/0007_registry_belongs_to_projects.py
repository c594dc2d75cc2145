"""the model registry belongs to projects: project in every registry table's primary key

Revision ID: 0007
Revises: 0006
"""
import warnings

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# table -> its primary key before this migration (the project goes first after it)
_KEYS = {
    'registered_models': ['name'],
    'registered_model_tags': ['name', 'key'],
    'registered_model_aliases': ['name', 'alias'],
    'model_versions': ['name', 'version'],
    'model_version_tags': ['name', 'version', 'key'],
}


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    for table, key in _KEYS.items():
        project = sa.Column('project', sa.String(length=64), server_default='default', nullable=False)
        if sqlite:
            # SQLite cannot change a primary key in place; batch mode rebuilds the table (and
            # warns that the reflected key differs from the new one, which is the point).
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', sa.exc.SAWarning)
                with op.batch_alter_table(table, recreate='always') as batch_op:
                    batch_op.add_column(project)
                    batch_op.create_primary_key(f'pk_{table}', ['project', *key])
        else:
            op.add_column(table, project)
            op.drop_constraint(f'{table}_pkey', table, type_='primary')
            op.create_primary_key(f'pk_{table}', table, ['project', *key])


def downgrade() -> None:
    for table, key in _KEYS.items():
        with op.batch_alter_table(table, recreate='always') as batch_op:
            batch_op.drop_constraint(f'pk_{table}', type_='primary')
            batch_op.drop_column('project')
            batch_op.create_primary_key(f'{table}_pkey', key)
