"""deposits.external_ref: the payment provider's reference, unique when present

Revision ID: c95e7a4f1d03
Revises: 7c42d9e1b302
Create Date: 2026-12-03 12:20:00
"""
from alembic import op
import sqlalchemy as sa

revision = "c95e7a4f1d03"
down_revision = "7c42d9e1b302"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: a metadata-only change, no table rewrite.
    op.add_column("deposits", sa.Column("external_ref", sa.String(128), nullable=True))
    # deposits is live: build the index without blocking writes. CONCURRENTLY cannot run in a transaction.
    with op.get_context().autocommit_block():
        op.create_index("deposits_external_ref_key", "deposits", ["external_ref"], unique=True,
                        postgresql_concurrently=True, postgresql_where=sa.text("external_ref IS NOT NULL"),
                        if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("deposits_external_ref_key", table_name="deposits", postgresql_concurrently=True,
                      if_exists=True)
    op.drop_column("deposits", "external_ref")
