"""The `job` runner: Alembic in the Cloud Run Job `<service>-migrate`, built from the service's own image.

The job runs what the image has: `python -m alembic -c migrations/<pkg>/alembic.ini upgrade REV` (cwd = the
project root, as the image's WORKDIR), with DATABASE_URL from the service's url_secret pinned to the version
that is latest now (so a secret changed mid-run cannot split a run), the VPC connector, no retries (a retried
half-applied migration is worse than a failed one) and a task timeout. Its log lines are followed while it
runs; on failure the last ones are read back (retrying briefly: logs arrive late) and diagnosed.
"""

from __future__ import annotations

import time

from deployctl import errors, interrupt, redact
from deployctl.context import Context
from deployctl.migration import diagnose
from deployctl.migration.runner import JOB_TASK_TIMEOUT, MigrationRun, apply_reading
from deployctl.migration.tree import Tree

LOG_SETTLE = 5.0  # seconds to wait for a finished execution's last log lines
LOG_LIMIT = 200
TAIL_SHOWN = 25


def job_id_for(service: str) -> str:
    return f"{service}-migrate"


def job_spec(ctx: Context, service: str, tree: Tree, *, lock_wait: float | None = None):
    from deployctl import dbtarget
    from deployctl.cloud.run import ContainerSpec
    from deployctl.cloud.secrets import SecretStore

    svc = ctx.config.service(service)
    target = dbtarget.resolve(ctx, service, ask_admin=False)
    store = SecretStore(ctx.clients, ctx.project)
    env: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
    if lock_wait is not None:
        env["DEPLOYCTL_LOCK_WAIT"] = f"{lock_wait:g}"
    secrets: dict[str, str] = {}
    url_version = _latest_version(store, target.url_secret) if target.url_secret else None
    if url_version:
        secrets["DATABASE_URL"] = f"{target.url_secret}:{url_version}"
    else:
        # No stored connection string: the pieces, with the password pinned like the URL would be.
        ctx.progress(service, f"no version of url_secret {target.url_secret or '(unset)'}; the job composes "
                              "its DSN from DB_* and the password secret", "warn")
        if target.host is None:  # only now is the live IP worth an admin call
            target = dbtarget.resolve(ctx, service)
        env.update(dbtarget.pieces_env(target))
        pw_version = _latest_version(store, target.password_secret)
        if not pw_version:
            raise errors.ConfigError(f"{service}: neither {target.url_secret} nor {target.password_secret} has a "
                                     "version the job could use", hint=f"deployctl dsn {service} --write-secret")
        secrets["DB_PASSWORD"] = f"{target.password_secret}:{pw_version}"
    return ContainerSpec(image=svc.image, command=["python", "-m", "alembic"],
                         args=["-c", tree.relative_ini(ctx.project_root), "upgrade", "head"], env=env,
                         secrets=secrets, vpc_connector=ctx.config.vpc_connector_for(service),
                         egress=ctx.config.network.egress, service_account=svc.service_account,
                         labels={"managed-by": "deployctl", "deployctl-service": service})


def _latest_version(store, secret_id: str) -> int | None:
    try:
        return store.get_version(secret_id, "latest").number
    except errors.NotFound:
        return None


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

    def settle(self, execution: str, *, failed: bool) -> list[str]:
        """The execution's lines, waiting briefly until its final lines have arrived."""
        deadline = time.monotonic() + LOG_SETTLE
        previous = -1
        while True:
            lines = self.lines(execution)
            if failed:  # the error line has arrived and nothing more came since the last read
                done = len(lines) == previous and any(diagnose.EXCEPTION_LINE.match(t.strip()) for t in lines)
            else:
                done = any("Will assume" in t or "Running " in t for t in lines)
            if done or time.monotonic() >= deadline:
                return lines
            previous = len(lines)
            interrupt.sleep(0.25)


def run_job(ctx: Context, service: str, tree: Tree, direction: str, to: str, *,
            lock_wait: float | None = None) -> MigrationRun:
    from deployctl.cloud.run_jobs import RunJobs

    jobs = RunJobs(ctx.clients, ctx.project, ctx.region)
    job_id = job_id_for(service)
    spec = job_spec(ctx, service, tree, lock_wait=lock_wait)
    ctx.progress(service, f"updating job {job_id} (image {spec.image})", detail=True)
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
    # Traceback frames say where in Alembic, not what went wrong: keep the messages.
    result.log_tail = [line for line in lines if line.strip() and not line.startswith("  ")
                       and not line.startswith(("Traceback (most recent", "During handling of", "The above "))
                       ][-TAIL_SHOWN:]
    d = diagnose.diagnose(reading, service)
    if d:
        result.diagnosis, result.cause, result.hint = d.code, d.cause, d.hint
        result.sqlstate = result.sqlstate or d.sqlstate
        if reading.sqlstate:
            result.error = f"{d.title}: {reading.server_message}"
    else:
        result.hint = f"read the job's log lines above; then: deployctl doctor {service}"
    result.error = result.error or ex.message or f"execution {ex.id} failed"
    return result
