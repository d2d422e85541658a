"""Alembic environment for cross-chain-integration: all the logic is shared in deployctl.migrate_env."""
from deployctl.migrate_env import run_migrations

run_migrations("cross-chain-integration")
