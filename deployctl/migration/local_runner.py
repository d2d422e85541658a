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
    """`url`: the service's DSN when the caller has it already (default: dbtarget.credential's)."""
    from alembic import command

    if url is None:
        from deployctl.dbtarget import credential

        url = credential(ctx, service).url
    if ctx.emulated and getattr(ctx.clients, "sqladmin_endpoint", None):
        # The connector (connector mode) asks the admin API; point it at the local cloud's.
        os.environ.setdefault("DEPLOYCTL_SQLADMIN_ENDPOINT", ctx.clients.sqladmin_endpoint)
    cfg = tree.config()
    cfg.attributes["database_url"] = url
    capture = _Capture()
    said: list[str] = []

    def say(line: str) -> None:  # migrate_env's own lines (lock waits, blockers, where it ended), live
        said.append(line)
        text = line.split(diagnose.PREFIX, 1)[-1]
        if not diagnose.AT.search(line):
            ctx.progress(service, text, "warn" if "waiting up to" in text or "blocked by" in text else "info")

    cfg.attributes["say"] = say
    logger = logging.getLogger("alembic.runtime.migration")
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
    reading = diagnose.read(capture.lines + said)
    apply_reading(result, reading, failed=failure is not None)
    if failure is not None:
        from deployctl.db.sqlstate import sqlstate_of
        from deployctl.errors import DeployctlError

        if isinstance(failure, DeployctlError):
            result.error, result.hint, result.diagnosis = failure.message, failure.hint, failure.code
        else:
            d = diagnose.with_blockers(diagnose.diagnose_exception(failure, service), reading)
            result.sqlstate = sqlstate_of(failure) or d.sqlstate
            result.diagnosis, result.cause, result.hint = d.code, d.cause, d.hint
            result.error = d.title  # the cause beside it says the rest
    return result
