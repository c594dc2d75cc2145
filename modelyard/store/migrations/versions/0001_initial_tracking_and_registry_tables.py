"""initial tracking and registry tables

Revision ID: 0001
Revises: 
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('datasets',
    sa.Column('dataset_uuid', sa.String(length=64), nullable=False),
    sa.Column('experiment_id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=500), nullable=False),
    sa.Column('digest', sa.String(length=36), nullable=False),
    sa.Column('source_type', sa.String(length=36), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('schema', sa.Text(), nullable=True),
    sa.Column('profile', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('dataset_uuid'),
    sa.UniqueConstraint('experiment_id', 'name', 'digest', name='uq_datasets_experiment_name_digest')
    )
    op.create_table('experiment_tags',
    sa.Column('experiment_id', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('experiment_id', 'key')
    )
    op.create_table('experiments',
    sa.Column('experiment_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('name', sa.String(length=500), nullable=False),
    sa.Column('artifact_location', sa.Text(), nullable=False),
    sa.Column('lifecycle_stage', sa.String(length=32), nullable=False),
    sa.Column('creation_time', sa.BigInteger(), nullable=False),
    sa.Column('last_update_time', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('experiment_id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('input_tags',
    sa.Column('input_uuid', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.String(length=500), nullable=False),
    sa.PrimaryKeyConstraint('input_uuid', 'key')
    )
    op.create_table('latest_metrics',
    sa.Column('run_uuid', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('value', sa.Float(precision=53), nullable=False),
    sa.Column('is_nan', sa.Boolean(), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('run_uuid', 'key'),
    sqlite_with_rowid=False
    )
    op.create_table('logged_model_metrics',
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('dataset_name', sa.String(length=500), server_default='', nullable=False),
    sa.Column('dataset_digest', sa.String(length=36), server_default='', nullable=False),
    sa.Column('value', sa.Float(precision=53), nullable=False),
    sa.Column('is_nan', sa.Boolean(), nullable=False),
    sa.Column('experiment_id', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('model_id', 'key', 'step', 'timestamp', 'run_id', 'dataset_name', 'dataset_digest')
    )
    op.create_table('logged_model_params',
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('model_id', 'key')
    )
    op.create_table('logged_model_tags',
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('model_id', 'key')
    )
    op.create_table('logged_models',
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('experiment_id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=500), nullable=False),
    sa.Column('artifact_location', sa.Text(), nullable=False),
    sa.Column('creation_timestamp_ms', sa.BigInteger(), nullable=False),
    sa.Column('last_updated_timestamp_ms', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=40), nullable=False),
    sa.Column('lifecycle_stage', sa.String(length=20), nullable=False),
    sa.Column('model_type', sa.String(length=500), nullable=True),
    sa.Column('source_run_id', sa.String(length=64), nullable=True),
    sa.Column('status_message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('model_id')
    )
    with op.batch_alter_table('logged_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_logged_models_experiment_id'), ['experiment_id'], unique=False)

    op.create_table('metrics',
    sa.Column('run_uuid', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.Column('value', sa.Float(precision=53), nullable=False),
    sa.Column('is_nan', sa.Boolean(), nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=True),
    sa.Column('dataset_name', sa.String(length=500), nullable=True),
    sa.Column('dataset_digest', sa.String(length=36), nullable=True),
    sa.PrimaryKeyConstraint('run_uuid', 'key', 'step', 'timestamp', 'value', 'is_nan'),
    sqlite_with_rowid=False
    )
    op.create_table('model_version_tags',
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'version', 'key')
    )
    op.create_table('model_versions',
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('creation_time', sa.BigInteger(), nullable=False),
    sa.Column('last_updated_time', sa.BigInteger(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('user_id', sa.String(length=256), nullable=True),
    sa.Column('current_stage', sa.String(length=20), nullable=False),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('storage_location', sa.Text(), nullable=True),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('run_link', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('status_message', sa.Text(), nullable=True),
    sa.Column('model_id', sa.String(length=64), nullable=True),
    sa.Column('deleted', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'version')
    )
    op.create_table('params',
    sa.Column('run_uuid', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('run_uuid', 'key'),
    sqlite_with_rowid=False
    )
    op.create_table('registered_model_aliases',
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('alias', sa.String(length=256), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'alias')
    )
    op.create_table('registered_model_tags',
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'key')
    )
    op.create_table('registered_models',
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('creation_time', sa.BigInteger(), nullable=False),
    sa.Column('last_updated_time', sa.BigInteger(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('run_inputs',
    sa.Column('input_uuid', sa.String(length=64), nullable=False),
    sa.Column('run_uuid', sa.String(length=64), nullable=False),
    sa.Column('dataset_uuid', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('input_uuid'),
    sa.UniqueConstraint('run_uuid', 'dataset_uuid', name='uq_run_inputs_run_dataset')
    )
    op.create_table('run_model_inputs',
    sa.Column('run_uuid', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('run_uuid', 'model_id')
    )
    op.create_table('run_model_outputs',
    sa.Column('run_uuid', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('run_uuid', 'model_id')
    )
    op.create_table('runs',
    sa.Column('run_uuid', sa.String(length=64), nullable=False),
    sa.Column('experiment_id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=250), nullable=False),
    sa.Column('user_id', sa.String(length=256), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('start_time', sa.BigInteger(), nullable=False),
    sa.Column('end_time', sa.BigInteger(), nullable=True),
    sa.Column('lifecycle_stage', sa.String(length=20), nullable=False),
    sa.Column('artifact_uri', sa.Text(), nullable=False),
    sa.Column('deleted_time', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('run_uuid')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_experiment_start', ['experiment_id', 'start_time', 'run_uuid'], unique=False)

    op.create_table('tags',
    sa.Column('run_uuid', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('run_uuid', 'key'),
    sqlite_with_rowid=False
    )


def downgrade() -> None:
    op.drop_table('tags')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_experiment_start')

    op.drop_table('runs')
    op.drop_table('run_model_outputs')
    op.drop_table('run_model_inputs')
    op.drop_table('run_inputs')
    op.drop_table('registered_models')
    op.drop_table('registered_model_tags')
    op.drop_table('registered_model_aliases')
    op.drop_table('params')
    op.drop_table('model_versions')
    op.drop_table('model_version_tags')
    op.drop_table('metrics')
    with op.batch_alter_table('logged_models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_logged_models_experiment_id'))

    op.drop_table('logged_models')
    op.drop_table('logged_model_tags')
    op.drop_table('logged_model_params')
    op.drop_table('logged_model_metrics')
    op.drop_table('latest_metrics')
    op.drop_table('input_tags')
    op.drop_table('experiments')
    op.drop_table('experiment_tags')
    op.drop_table('datasets')
