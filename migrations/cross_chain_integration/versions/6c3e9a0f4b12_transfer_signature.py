"""transfers.signature: HMAC by the service's SIGNING_KEY (its listing index is the next revision)

Revision ID: 6c3e9a0f4b12
Revises: 5d0a8b3c7e01
Create Date: 2026-12-03 12:05:00

Transactional on its own: CREATE INDEX CONCURRENTLY cannot share a revision with transactional DDL, hence
8e6b1f4d2a02.
"""
from alembic import op
import sqlalchemy as sa

revision = "6c3e9a0f4b12"
down_revision = "5d0a8b3c7e01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: rows written before this revision have no signature. IF NOT EXISTS: an older 8e6b1f4d2a02
    # committed this column in its autocommit block and then failed, leaving the column and 5d0a8b3c7e01.
    op.add_column("transfers", sa.Column("signature", sa.String(64), nullable=True), if_not_exists=True)


def downgrade() -> None:
    op.drop_column("transfers", "signature")
