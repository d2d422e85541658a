"""deposits.external_ref: the payment provider's reference (its unique index is the next revision)

Revision ID: 9d27c3b8e104
Revises: 7c42d9e1b302
Create Date: 2026-12-03 12:15:00

Transactional on its own: CREATE INDEX CONCURRENTLY cannot share a revision with transactional DDL (its
autocommit block would commit the column first, so a failing index would leave the column applied and the
revision not), hence c95e7a4f1d03.
"""
from alembic import op
import sqlalchemy as sa

revision = "9d27c3b8e104"
down_revision = "7c42d9e1b302"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: a metadata-only change, no table rewrite. IF NOT EXISTS: an older c95e7a4f1d03
    # committed this column in its autocommit block and then failed, leaving the column and 7c42d9e1b302.
    op.add_column("deposits", sa.Column("external_ref", sa.String(128), nullable=True), if_not_exists=True)


def downgrade() -> None:
    op.drop_column("deposits", "external_ref")
