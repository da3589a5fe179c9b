"""enforcement: the outbox events claimed above the shared cursor (late commits)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 09:25:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('enforced_events',
    sa.Column('event_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('claimed_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_enforced_events'))
    )


def downgrade() -> None:
    op.drop_table('enforced_events')
