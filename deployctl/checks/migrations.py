"""Migrations: the Alembic tree has a single head, the database is at it, and the last migration job
(`<service>-migrate`) succeeded (else its error and the last lines of its log)."""

from __future__ import annotations

from deployctl import redact
from deployctl.checks.engine import Outcome, Skip, failed, passed, skipped, warned
from deployctl.checks.facts import MIGRATE_JOB, Facts
from deployctl.errors import CloudError

LOG_LINES = 8


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
        return skipped("no working login to read alembic_version")
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

    evidence = []
    try:
        lines = tail(f.ctx.clients, f.ctx.project, job_filter(job_id, execution=last.id), limit=LOG_LINES)
        evidence = [redact.redact(x.text.rstrip()) for x in lines if x.text.strip()]
    except CloudError as e:
        evidence = [f"(logs not readable: {e.message})"]
    error = next((x for x in reversed(evidence) if any(w in x for w in ("FATAL", "Error", "error", "failed"))),
                 last.message)
    cause = f"the last execution {last.id} of {job_id} failed: {error}"
    step = f"deployctl migrate {service}"
    if "password authentication failed" in error or "28P01" in error:
        step = f"the job could not log in: see db.login / db.passwords above, then {step}"
    elif "no encryption" in error:
        step = f"the job's connection lacks SSL: deployctl dsn {service} --write-secret, then {step}"
    elif "already exists" in error:
        step = f"a partial run left objects behind: make the migration idempotent (DESIGN §7), then {step}"
    return failed(cause, step, evidence[-LOG_LINES:])
