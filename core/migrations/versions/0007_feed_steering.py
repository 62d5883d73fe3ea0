"""feed steering: what a user asked their feed for in words

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 00:40:00
"""
from alembic import op
import sqlalchemy as sa

from core.db.models import UTCDateTime


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'feed_steering',
        sa.Column('user_id', sa.Uuid(), nullable=False),
        sa.Column('text', sa.String(length=300), nullable=False),
        sa.Column('more', sa.JSON(), nullable=False),
        sa.Column('less', sa.JSON(), nullable=False),
        sa.Column('more_vector', sa.JSON(), nullable=True),
        sa.Column('less_vector', sa.JSON(), nullable=True),
        sa.Column('model', sa.String(length=80), nullable=False),
        sa.Column('updated_at', UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id'),
    )


def downgrade() -> None:
    op.drop_table('feed_steering')
