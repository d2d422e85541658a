"""Alembic migrations of the services' databases: where each tree is (tree), current vs head (status), running
them as a Cloud Run Job or in-process (runner), reading a failed run's logs (diagnose) and linting (lint).
No Typer or Rich here; commands/migrate.py turns these into results."""
