"""Alembic environment for fiat-gateway: all the logic is shared in deployctl.migrate_env."""
from deployctl.migrate_env import run_migrations

run_migrations("fiat-gateway")
