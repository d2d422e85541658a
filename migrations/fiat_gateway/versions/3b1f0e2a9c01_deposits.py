"""deposits

Revision ID: 3b1f0e2a9c01
Revises:
Create Date: 2026-12-03 12:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "3b1f0e2a9c01"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deposits",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.Numeric(20, 2), nullable=False),
        sa.Column("currency", sa.CHAR(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("amount > 0", name="deposits_amount_positive"),
        sa.CheckConstraint("status IN ('pending', 'settled', 'rejected')", name="deposits_status_known"),
    )
    op.create_index("deposits_account_id_idx", "deposits", ["account_id", "id"])


def downgrade() -> None:
    op.drop_table("deposits")
