"""agents: ceilings, time-boxed grants; quarantine

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 02:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ceiling', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('quarantined_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('quarantine_reason', sa.String(length=300),
                                      nullable=True))

    op.create_table('agent_grants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('identity_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=63), nullable=False),
    sa.Column('value', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('duration_seconds', sa.Integer(), nullable=False),
    sa.Column('requested_at', sa.DateTime(), nullable=False),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('decided_by', sa.String(length=320), nullable=True),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'],
                            name=op.f('fk_agent_grants_identity_id_identities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_grants'))
    )
    with op.batch_alter_table('agent_grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_grants_identity_id'), ['identity_id'],
                              unique=False)
        batch_op.create_index('ix_agent_grants_status_expires', ['status', 'expires_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('agent_grants', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_grants_status_expires')
        batch_op.drop_index(batch_op.f('ix_agent_grants_identity_id'))
    op.drop_table('agent_grants')
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.drop_column('quarantine_reason')
        batch_op.drop_column('quarantined_at')
        batch_op.drop_column('ceiling')
