"""agents: used proof nonces, shared by every node (replay across nodes)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 08:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agent_proof_nonces',
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('digest', name=op.f('pk_agent_proof_nonces'))
    )
    with op.batch_alter_table('agent_proof_nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_proof_nonces_expires_at'), ['expires_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('agent_proof_nonces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_proof_nonces_expires_at'))
    op.drop_table('agent_proof_nonces')
