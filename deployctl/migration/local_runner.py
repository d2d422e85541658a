"""The `local` runner: Alembic in this process against the service's database, reached from here directly
(the private IP, via dbtarget.build_dsn) or through the Cloud SQL connector (database.mode = "connector").
The shared env (deployctl.migrate_env) takes the URL from the Alembic config's attributes, so it never
passes through os.environ or a file."""

from __future__ import annotations

import logging
import os

from deployctl.context import Context
from deployctl.migration import diagnose
from deployctl.migration.runner import MigrationRun, apply_reading
from deployctl.migration.tree import Tree, quiet_alembic_logging


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run_local(ctx: Context, service: str, tree: Tree, direction: str, to: str, *,
              url: str | None = None) -> MigrationRun:
    """`url`: the service's DSN when the caller has it already (default: dbtarget.database_url)."""
    from alembic import command

    if url is None:
        from deployctl.dbtarget import database_url

        url = database_url(ctx, service)
    if ctx.emulated and getattr(ctx.clients, "sqladmin_endpoint", None):
        # The connector (connector mode) asks the admin API; point it at the local cloud's.
        os.environ.setdefault("DEPLOYCTL_SQLADMIN_ENDPOINT", ctx.clients.sqladmin_endpoint)
    cfg = tree.config()
    cfg.attributes["database_url"] = url
    logger = logging.getLogger("alembic.runtime.migration")
    capture = _Capture()
    previous_level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    result = MigrationRun(service=service, runner="local", target=to, direction=direction)
    ctx.progress(service, f"running alembic {direction} {to} from here")
    try:
        with quiet_alembic_logging():
            (command.upgrade if direction == "upgrade" else command.downgrade)(cfg, to)
        failure = None
    except Exception as e:  # noqa: BLE001 - a failed migration is a result
        failure = e
    finally:
        logger.removeHandler(capture)
        logger.setLevel(previous_level)
    for line in capture.lines:
        if diagnose.STEP.search(line + " "):
            ctx.progress(service, line)
    reading = diagnose.read(capture.lines)
    apply_reading(result, reading, failed=failure is not None)
    if failure is not None:
        from deployctl.db.sqlstate import sqlstate_of
        from deployctl.errors import DeployctlError

        if isinstance(failure, DeployctlError):
            result.error, result.hint, result.diagnosis = failure.message, failure.hint, failure.code
        else:
            d = diagnose.diagnose_exception(failure, service)
            result.sqlstate = sqlstate_of(failure) or d.sqlstate
            result.diagnosis, result.cause, result.hint = d.code, d.cause, d.hint
            result.error = f"{d.title}: {d.cause}"
    return result
