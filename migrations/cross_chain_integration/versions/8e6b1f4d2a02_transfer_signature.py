"""transfers.signature (HMAC by the service's SIGNING_KEY) and an index for listing by status

Revision ID: 8e6b1f4d2a02
Revises: 5d0a8b3c7e01
Create Date: 2026-12-03 12:10:00
"""
from alembic import op
import sqlalchemy as sa

revision = "8e6b1f4d2a02"
down_revision = "5d0a8b3c7e01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: rows written before this revision have no signature.
    op.add_column("transfers", sa.Column("signature", sa.String(64), nullable=True))
    with op.get_context().autocommit_block():
        op.create_index("transfers_status_created_idx", "transfers", ["status", "created_at"],
                        postgresql_concurrently=True, if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("transfers_status_created_idx", table_name="transfers", postgresql_concurrently=True,
                      if_exists=True)
    op.drop_column("transfers", "signature")
