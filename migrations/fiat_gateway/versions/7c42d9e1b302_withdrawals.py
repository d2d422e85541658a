"""withdrawals

Revision ID: 7c42d9e1b302
Revises: 3b1f0e2a9c01
Create Date: 2026-12-03 12:10:00
"""
from alembic import op
import sqlalchemy as sa

revision = "7c42d9e1b302"
down_revision = "3b1f0e2a9c01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "withdrawals",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.Numeric(20, 2), nullable=False),
        sa.Column("currency", sa.CHAR(3), nullable=False),
        sa.Column("destination_iban", sa.String(34), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="requested"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("amount > 0", name="withdrawals_amount_positive"),
    )
    # A new, empty table: a plain CREATE INDEX locks nothing that anyone is using yet.
    op.create_index("withdrawals_account_created_idx", "withdrawals", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_index("withdrawals_account_created_idx", table_name="withdrawals")
    op.drop_table("withdrawals")
