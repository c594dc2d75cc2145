"""deployments and their replicas

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('deployments',
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('model_name', sa.String(length=256), nullable=False),
    sa.Column('versions', sa.Text(), nullable=False),
    sa.Column('shadow_version', sa.String(length=32), nullable=True),
    sa.Column('shadow_alias', sa.String(length=256), nullable=True),
    sa.Column('endpoint_url', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('creation_time', sa.BigInteger(), nullable=False),
    sa.Column('last_updated_time', sa.BigInteger(), nullable=False),
    sa.Column('last_heartbeat_time', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('project', 'name')
    )
    op.create_index('ix_deployments_project_model', 'deployments', ['project', 'model_name'], unique=False)
    op.create_table('deployment_replicas',
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('deployment', sa.String(length=256), nullable=False),
    sa.Column('replica_id', sa.String(length=256), nullable=False),
    sa.Column('endpoint_url', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('started_time', sa.BigInteger(), nullable=False),
    sa.Column('last_heartbeat_time', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project', 'deployment', 'replica_id')
    )


def downgrade() -> None:
    op.drop_table('deployment_replicas')
    op.drop_index('ix_deployments_project_model', table_name='deployments')
    op.drop_table('deployments')
