"""transfers_status_created_idx: listing transfers by status, built without blocking writes

Revision ID: 8e6b1f4d2a02
Revises: 6c3e9a0f4b12
Create Date: 2026-12-03 12:10:00

CREATE INDEX CONCURRENTLY cannot run in a transaction, so this revision holds nothing else; an INVALID index
left by a failed build is dropped first (IF NOT EXISTS would take it for done).
"""
from alembic import op

from deployctl.migrate_env import drop_index_if_invalid

revision = "8e6b1f4d2a02"
down_revision = "6c3e9a0f4b12"
branch_labels = None
depends_on = None

INDEX = "transfers_status_created_idx"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        drop_index_if_invalid(INDEX)
        op.create_index(INDEX, "transfers", ["status", "created_at"], postgresql_concurrently=True,
                        if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="transfers", postgresql_concurrently=True, if_exists=True)
