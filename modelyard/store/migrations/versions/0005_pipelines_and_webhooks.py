"""pipelines, their runs and jobs; registry webhooks and their deliveries

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pipelines',
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('experiment_id', sa.BigInteger(), nullable=True),
    sa.Column('spec', sa.Text(), nullable=True),
    sa.Column('creation_time', sa.BigInteger(), nullable=False),
    sa.Column('last_update_time', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project', 'name')
    )
    op.create_table('pipeline_runs',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('pipeline', sa.String(length=256), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('run_key', sa.String(length=256), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('trigger', sa.Text(), nullable=True),
    sa.Column('mlflow_run_id', sa.String(length=64), nullable=True),
    sa.Column('experiment_id', sa.BigInteger(), nullable=True),
    sa.Column('executor', sa.String(length=32), nullable=True),
    sa.Column('git_commit', sa.String(length=64), nullable=True),
    sa.Column('ci', sa.Text(), nullable=True),
    sa.Column('planned_jobs', sa.Text(), nullable=True),
    sa.Column('claimed_by', sa.String(length=256), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('creation_time', sa.BigInteger(), nullable=False),
    sa.Column('start_time', sa.BigInteger(), nullable=True),
    sa.Column('end_time', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('run_id'),
    sa.UniqueConstraint('project', 'pipeline', 'number', name='uq_pipeline_runs_number'),
    sa.UniqueConstraint('project', 'pipeline', 'run_key', name='uq_pipeline_runs_run_key')
    )
    op.create_index('ix_pipeline_runs_status', 'pipeline_runs', ['status', 'creation_time'], unique=False)
    op.create_table('pipeline_jobs',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('pipeline', sa.String(length=256), nullable=False),
    sa.Column('stage', sa.String(length=100), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('cache_key', sa.String(length=64), nullable=True),
    sa.Column('key_parts', sa.Text(), nullable=True),
    sa.Column('cached_from', sa.String(length=64), nullable=True),
    sa.Column('outputs_run_id', sa.String(length=64), nullable=True),
    sa.Column('mlflow_run_id', sa.String(length=64), nullable=True),
    sa.Column('outputs', sa.Text(), nullable=True),
    sa.Column('result', sa.Text(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('start_time', sa.BigInteger(), nullable=True),
    sa.Column('end_time', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('run_id', 'name')
    )
    op.create_index('ix_pipeline_jobs_cache', 'pipeline_jobs', ['project', 'pipeline', 'name', 'cache_key'],
                    unique=False)
    op.create_index('ix_pipeline_jobs_history', 'pipeline_jobs', ['project', 'pipeline', 'name', 'end_time'],
                    unique=False)
    op.create_table('webhooks',
    sa.Column('webhook_id', sa.String(length=36), nullable=False),
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('secret', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('creation_timestamp', sa.BigInteger(), nullable=False),
    sa.Column('last_updated_timestamp', sa.BigInteger(), nullable=False),
    sa.Column('deleted_timestamp', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('webhook_id')
    )
    op.create_index('ix_webhooks_project', 'webhooks', ['project', 'creation_timestamp'], unique=False)
    op.create_table('webhook_events',
    sa.Column('webhook_id', sa.String(length=36), nullable=False),
    sa.Column('entity', sa.String(length=50), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.PrimaryKeyConstraint('webhook_id', 'entity', 'action')
    )
    op.create_index('ix_webhook_events_event', 'webhook_events', ['entity', 'action'], unique=False)
    op.create_table('webhook_deliveries',
    sa.Column('delivery_id', sa.String(length=36), nullable=False),
    sa.Column('webhook_id', sa.String(length=36), nullable=False),
    sa.Column('event', sa.String(length=80), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('creation_time', sa.BigInteger(), nullable=False),
    sa.Column('last_attempt_time', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('delivery_id')
    )
    op.create_index('ix_webhook_deliveries_webhook_time', 'webhook_deliveries', ['webhook_id', 'creation_time'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_deliveries_webhook_time', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_index('ix_webhook_events_event', table_name='webhook_events')
    op.drop_table('webhook_events')
    op.drop_index('ix_webhooks_project', table_name='webhooks')
    op.drop_table('webhooks')
    op.drop_index('ix_pipeline_jobs_history', table_name='pipeline_jobs')
    op.drop_index('ix_pipeline_jobs_cache', table_name='pipeline_jobs')
    op.drop_table('pipeline_jobs')
    op.drop_index('ix_pipeline_runs_status', table_name='pipeline_runs')
    op.drop_table('pipeline_runs')
    op.drop_table('pipelines')
