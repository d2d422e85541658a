"""Migrations: the Alembic tree has a single head, the database is at it, and the last migration job
(`<service>-migrate`) succeeded (else its error and the last lines of its log)."""

from __future__ import annotations

from deployctl import redact
from deployctl.checks.engine import Outcome, Skip, failed, passed, skipped, warned
from deployctl.checks.facts import MIGRATE_JOB, Facts
from deployctl.errors import CloudError

LOG_LINES = 8  # shown as evidence; LOG_LIMIT lines are read and diagnosed


def _tree(f: Facts, service: str):
    db = f.ctx.config.services[service].database
    if db is None or db.migrations is None:
        raise Skip("no migrations configured")
    path = f.ctx.config.resolve(db.migrations)
    if not path.is_dir():
        return None, path
    return f.memo(f"heads:{service}", lambda: _heads(path)), path


def _heads(path) -> list[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(path))
    return list(ScriptDirectory.from_config(cfg).get_heads())


def heads(f: Facts, service: str) -> Outcome:
    found, path = _tree(f, service)
    if found is None:
        return failed(f"migrations directory {path} does not exist", f"fix services.{service}.database.migrations")
    if len(found) > 1:
        return failed(f"{len(found)} heads in {path.name}: {', '.join(sorted(found))} (two branches were not merged)",
                      f"alembic -c {path}/alembic.ini merge -m merge {' '.join(sorted(found))}")
    if not found:
        return warned(f"{path.name} has no revisions yet")
    return passed(f"single head {found[0]}")


def current(f: Facts, service: str) -> Outcome:
    found, _ = _tree(f, service)
    result = f.database(service)
    session = result.get("session") if result["tcp"]["ok"] else None
    if not session or "error" in session:
        return skipped("no working login to read alembic_version (see db.login and dsn.login)")
    at = session.get("alembic")
    head = found[0] if found and len(found) == 1 else None
    if not at:
        return warned("the database has no migrations applied (no alembic_version)", f"deployctl migrate {service}")
    if head and head in at:
        return passed(f"at head {head}")
    return warned(f"the database is at {', '.join(at)}, head is {head or ', '.join(found or [])}: migrations pending",
                  f"deployctl migrate {service}")


def last_job(f: Facts, service: str) -> Outcome:
    job_id = MIGRATE_JOB.format(service=service)
    try:
        job = f.migrate_job(service)
    except CloudError as e:
        return warned(f"cannot read job {job_id}: {e.message}", e.hint or "")
    if job is None:
        return skipped(f"no migration job {job_id} yet (created by deployctl migrate / deploy)")
    executions = f.run_jobs.executions(job_id)
    if not executions:
        return skipped(f"job {job_id} has never run")
    executions.sort(key=lambda e: (e.start_time is not None, e.start_time), reverse=True)
    last = executions[0]
    if not last.done:
        return warned(f"execution {last.id} of {job_id} is still running", f"deployctl migrate {service}")
    if last.succeeded:
        return passed(f"last execution {last.id} succeeded")
    from deployctl.cloud.logs import job_filter, tail
    from deployctl.migration import diagnose
    from deployctl.migration.job_runner import LOG_LIMIT

    try:
        got = tail(f.ctx.clients, f.ctx.project, job_filter(job_id, execution=last.id), limit=LOG_LIMIT)
        lines = [redact.redact(x.text.rstrip("\n")) for x in got]
    except CloudError as e:
        return failed(f"the last execution {last.id} of {job_id} failed: {last.message}",
                      f"deployctl migrate {service}", [f"(logs not readable: {e.message})"])
    # The job runner's reading: SQLSTATE first, the failing revision, traceback frames left out.
    reading = diagnose.read(lines)
    d = diagnose.diagnose(reading, service)
    where = f" at revision {reading.failing_revision}" if reading.failing_revision else ""
    if d is not None:
        said = f"{d.title} (SQLSTATE {d.sqlstate})" if d.sqlstate else d.title
        detail = reading.server_message or d.cause
        cause = f"the last execution {last.id} of {job_id} failed{where}: {said}: {detail}"
    else:
        cause = f"the last execution {last.id} of {job_id} failed{where}: {reading.error_line or last.message}"
    return failed(cause, _next_step(d, service, f), diagnose.tail(lines, LOG_LINES))


def _next_step(d, service: str, f: Facts | None = None) -> str:
    again = f"deployctl migrate {service}"
    if d is None:
        return f"read the job's log lines above, then {again}"
    if d.code == "database-missing" and f is not None and _database_exists(f, service):
        # created since (doctor --fix, terraform apply): creating it again is not the next step
        return f"database {f.target(service).database} exists now: {again}"
    if d.code == "auth-failed":
        return f"the job could not log in: see db.login / db.passwords / dsn.login above, then {again}"
    if d.code in ("ssl-required", "network-dns"):
        return f"the job's connection string is wrong: see dsn.lint above (deployctl dsn {service} --write-secret), " \
               f"then {again}"
    if d.code.startswith("network-"):
        return f"the job could not reach the database: see net.private-ip / net.vpc-connector above, then {again}"
    if d.code == "already-exists":  # its hint says a partial run left objects behind, and the idempotent fix
        return f"{d.hint}; then {again}"
    return f"{d.hint}; then {again}"


def _database_exists(f: Facts, service: str) -> bool:
    t = f.target(service)
    try:
        return t.database in f.databases(t.instance_name)
    except CloudError:
        return False
