"""chain and transfer_status enums, transfers

Revision ID: 5d0a8b3c7e01
Revises:
Create Date: 2026-12-03 12:00:00

The enum types are created idempotently (a run that died after CREATE TYPE must not fail the next one with
`type "chain" already exists`), and the columns use them with create_type=False so create_table does not try
to create them again. drop_table leaves types behind, so the downgrade drops them explicitly.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "5d0a8b3c7e01"
down_revision = None
branch_labels = None
depends_on = None

CHAINS = ("ethereum", "polygon", "arbitrum", "optimism")
TRANSFER_STATUSES = ("pending", "submitted", "confirmed", "failed")


def create_enum_if_missing(name: str, values: tuple[str, ...]) -> None:
    labels = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    op.execute(f"DO $$ BEGIN CREATE TYPE {name} AS ENUM ({labels}); "
               "EXCEPTION WHEN duplicate_object THEN NULL; END $$")


def upgrade() -> None:
    create_enum_if_missing("chain", CHAINS)
    create_enum_if_missing("transfer_status", TRANSFER_STATUSES)
    chain = postgresql.ENUM(*CHAINS, name="chain", create_type=False)
    status = postgresql.ENUM(*TRANSFER_STATUSES, name="transfer_status", create_type=False)
    op.create_table(
        "transfers",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("source_chain", chain, nullable=False),
        sa.Column("destination_chain", chain, nullable=False),
        sa.Column("asset", sa.String(16), nullable=False),
        sa.Column("amount", sa.Numeric(38, 18), nullable=False),
        sa.Column("sender", sa.String(128), nullable=False),
        sa.Column("recipient", sa.String(128), nullable=False),
        sa.Column("status", status, nullable=False, server_default="pending"),
        sa.Column("tx_hash", sa.String(80)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("amount > 0", name="transfers_amount_positive"),
        sa.CheckConstraint("source_chain <> destination_chain", name="transfers_distinct_chains"),
    )


def downgrade() -> None:
    op.drop_table("transfers")
    op.execute("DROP TYPE IF EXISTS transfer_status")
    op.execute("DROP TYPE IF EXISTS chain")
