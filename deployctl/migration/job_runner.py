"""The `job` runner: Alembic in the Cloud Run Job `<service>-migrate`, built from the service's own image.

The job runs what the image has: `python -m alembic -c migrations/<pkg>/alembic.ini upgrade REV` (cwd = the
project root, as the image's WORKDIR), with the login the status read used (dbtarget.credential: DATABASE_URL
from the url_secret, or the pieces and DB_PASSWORD) pinned to the version read now (so a secret changed mid-run
cannot split a run), the VPC connector, no retries (a retried half-applied migration is worse than a failed
one) and a task timeout enclosing the lock wait and the statement timeout. Its log lines are followed while it
runs; at the end they are read back (retrying briefly: logs arrive late) and, on failure, diagnosed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from deployctl import errors, interrupt, redact
from deployctl.context import Context
from deployctl.migration import diagnose
from deployctl.migration.runner import JOB_TASK_TIMEOUT, MigrationRun, apply_reading, job_timeouts

if TYPE_CHECKING:
    from deployctl.dbtarget import Credential
    from deployctl.migration.tree import Tree

LOG_SETTLE = 5.0  # seconds to wait for a finished execution's last log lines
LOG_LIMIT = 200
TAIL_SHOWN = 25


def job_id_for(service: str) -> str:
    return f"{service}-migrate"


def job_spec(ctx: Context, service: str, tree: Tree, cred: Credential, *, lock_wait: float | None = None):
    """The job's container: the credential the caller resolved and linted (dbtarget.credential), pinned to
    its version, and timeouts nested inside the task timeout."""
    from deployctl import dbtarget
    from deployctl.cloud.run import ContainerSpec

    svc = ctx.config.service(service)
    wait, statement = job_timeouts(lock_wait)
    env: dict[str, str] = {"PYTHONUNBUFFERED": "1", "DEPLOYCTL_LOCK_WAIT": f"{wait:g}",
                           "DEPLOYCTL_STATEMENT_TIMEOUT": f"{statement:g}"}
    if cred.kind == "url":
        secrets = {"DATABASE_URL": f"{cred.secret}:{cred.version}"}
    else:
        # No stored connection string: the pieces, with the password pinned like the URL would be.
        env.update(dbtarget.pieces_env(dbtarget.resolve(ctx, service)))
        secrets = {"DB_PASSWORD": f"{cred.secret}:{cred.version}"}
    return ContainerSpec(image=svc.image, command=["python", "-m", "alembic"],
                         args=["-c", tree.relative_ini(ctx.project_root), "upgrade", "head"], env=env,
                         secrets=secrets, vpc_connector=ctx.config.vpc_connector_for(service),
                         egress=ctx.config.network.egress, service_account=ctx.config.service_account_for(service),
                         labels={"managed-by": "deployctl", "deployctl-service": service})


def _apply(jobs, job_id: str, spec) -> None:
    # Concurrent runs race to create the job: the loser updates instead.
    for attempt in range(3):
        try:
            jobs.apply(job_id, spec, max_retries=0, timeout_s=JOB_TASK_TIMEOUT)
            return
        except (errors.AlreadyExists, errors.Conflict):
            if attempt == 2:
                raise
            interrupt.sleep(0.2 * (attempt + 1))


class LogFollower:
    """Shows a running execution's meaningful lines (Alembic steps, lock waits) once each, as progress."""

    def __init__(self, ctx: Context, service: str, job_id: str) -> None:
        self.ctx, self.service, self.job_id = ctx, service, job_id
        self.seen: set[tuple] = set()
        self.execution: str | None = None

    def lines(self, execution: str) -> list[str]:
        from deployctl.cloud.logs import job_filter, tail

        got = tail(self.ctx.clients, self.ctx.project, job_filter(self.job_id, execution=execution),
                   limit=LOG_LIMIT)
        out = []
        for line in got:
            text = redact.redact(line.text.rstrip("\n"))
            out.append(text)
            key = (line.timestamp, text)
            if key in self.seen:
                continue
            self.seen.add(key)
            if diagnose.AT.search(text):
                continue  # the run's last word: the result says it
            if diagnose.PREFIX in text:
                self.ctx.progress(self.service, text.split(diagnose.PREFIX, 1)[1], "warn"
                                  if "waiting up to" in text else "info")
            elif diagnose.STEP.search(text + " "):
                self.ctx.progress(self.service, text.split("] ", 1)[-1])
        return out

    def on_progress(self, ex) -> None:
        if ex.id and self.execution != ex.id:
            self.execution = ex.id
            self.ctx.progress(self.service, f"job {self.job_id}: execution {ex.id} started", detail=True)
        if self.execution:
            try:
                self.lines(self.execution)
            except errors.DeployctlError:
                pass  # progress only: the final read below reports a real problem

    def settle(self, execution: str, *, failed: bool,
               until: Callable[[list[str]], bool] | None = None) -> list[str]:
        """The execution's lines, waiting briefly (Cloud Logging lags) until its final lines have arrived:
        `until(lines)` says so, by default a migration's last word or its error line."""
        deadline = time.monotonic() + LOG_SETTLE
        previous = -1
        while True:
            lines = self.lines(execution)
            if until is not None:
                done = until(lines)
            elif failed:  # the error line has arrived and nothing more came since the last read
                done = len(lines) == previous and any(diagnose.EXCEPTION_LINE.match(t.strip()) for t in lines)
            else:
                done = any(diagnose.AT.search(t) for t in lines)
            if done or time.monotonic() >= deadline:
                return lines
            previous = len(lines)
            interrupt.sleep(0.25)


def run_job(ctx: Context, service: str, tree: Tree, direction: str, to: str, cred: Credential, *,
            lock_wait: float | None = None) -> MigrationRun:
    from deployctl.cloud.run_jobs import RunJobs

    jobs = RunJobs(ctx.clients, ctx.project, ctx.region)
    job_id = job_id_for(service)
    spec = job_spec(ctx, service, tree, cred, lock_wait=lock_wait)
    ctx.progress(service, f"updating job {job_id} (image {spec.image}, login {cred.source})", detail=True)
    _apply(jobs, job_id, spec)
    follower = LogFollower(ctx, service, job_id)
    args = ["-c", tree.relative_ini(ctx.project_root), direction, to]
    ctx.progress(service, f"running job {job_id}: alembic {direction} {to}")
    ex = jobs.run(job_id, args=args, on_progress=follower.on_progress, deadline=JOB_TASK_TIMEOUT + 60)
    result = MigrationRun(service=service, runner="job", target=to, direction=direction, execution=ex.id)
    lines = follower.settle(ex.id, failed=not ex.succeeded)
    reading = diagnose.read(lines)
    apply_reading(result, reading, failed=not ex.succeeded)
    if ex.succeeded:
        return result
    result.log_tail = diagnose.tail(lines, TAIL_SHOWN)
    d = diagnose.diagnose(reading, service)
    if d:
        result.diagnosis, result.cause, result.hint = d.code, d.cause, d.hint
        result.sqlstate = result.sqlstate or d.sqlstate
        if reading.sqlstate:
            said = reading.server_message or ""
            result.error = said if said.startswith(d.title) else f"{d.title}: {said}"
        if d.code == "auth-failed":
            result.cause = f"{ctx.config.services[service].database.user} rejected {cred.source}: {d.cause}"
    else:
        result.hint = f"read the job's log lines above; then: deployctl doctor {service}"
    result.error = result.error or ex.message or f"execution {ex.id} failed"
    return result
