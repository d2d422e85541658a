"""deposits_external_ref_key: deposits.external_ref unique when present, built without blocking writes

Revision ID: c95e7a4f1d03
Revises: 9d27c3b8e104
Create Date: 2026-12-03 12:20:00

deposits is live: CREATE INDEX CONCURRENTLY, which cannot run in a transaction, so this revision holds nothing
else. A build that failed (lock_timeout behind a long transaction, a duplicate value) leaves an INVALID index
that IF NOT EXISTS would take for done, leaving uniqueness unenforced: it is dropped first.
"""
from alembic import op
import sqlalchemy as sa

from deployctl.migrate_env import drop_index_if_invalid

revision = "c95e7a4f1d03"
down_revision = "9d27c3b8e104"
branch_labels = None
depends_on = None

INDEX = "deposits_external_ref_key"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        drop_index_if_invalid(INDEX)
        op.create_index(INDEX, "deposits", ["external_ref"], unique=True, postgresql_concurrently=True,
                        postgresql_where=sa.text("external_ref IS NOT NULL"), if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="deposits", postgresql_concurrently=True, if_exists=True)
