"""identities: a partial index on quarantined_at (the segment overlays' every-second read)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 06:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_identities_quarantined', 'identities', ['quarantined_at'],
                    unique=False,
                    sqlite_where=sa.text('quarantined_at IS NOT NULL'),
                    postgresql_where=sa.text('quarantined_at IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_identities_quarantined', table_name='identities')
