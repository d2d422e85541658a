"""chain: add 'base'

Revision ID: b47c9d2e5f03
Revises: 8e6b1f4d2a02
Create Date: 2026-12-03 12:20:00

ALTER TYPE ... ADD VALUE cannot run in a transaction block before PostgreSQL 12, and from 12 on the new
value cannot be used in the transaction that added it: run it in an autocommit block, so it is committed
before anything (a later revision, the service) uses it. IF NOT EXISTS makes a re-run harmless.

PostgreSQL cannot drop an enum value: the downgrade recreates the type without it. It fails, on purpose,
while any row still uses 'base' (SQLSTATE 22P02) rather than deleting data.
"""
from alembic import op

revision = "b47c9d2e5f03"
down_revision = "8e6b1f4d2a02"
branch_labels = None
depends_on = None

CHAINS_BEFORE = ("ethereum", "polygon", "arbitrum", "optimism")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("ALTER TYPE chain ADD VALUE IF NOT EXISTS 'base'")


def downgrade() -> None:
    labels = ", ".join(f"'{v}'" for v in CHAINS_BEFORE)
    op.execute("ALTER TYPE chain RENAME TO chain_with_base")
    op.execute(f"CREATE TYPE chain AS ENUM ({labels})")
    # Both columns in one statement: the CHECK comparing them is rebuilt once, with both on the new type.
    op.execute("ALTER TABLE transfers "
               "ALTER COLUMN source_chain TYPE chain USING source_chain::text::chain, "
               "ALTER COLUMN destination_chain TYPE chain USING destination_chain::text::chain")
    op.execute("DROP TYPE chain_with_base")
