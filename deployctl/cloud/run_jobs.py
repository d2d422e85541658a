"""Cloud Run jobs and executions, typed: create or update a job, run it with overrides, follow its execution.

    jobs = RunJobs(clients, project="acme-dev", region="us-central1")
    jobs.apply("migrate-api", ContainerSpec(image=..., command=["alembic"], args=["upgrade", "head"]))
    ex = jobs.run("migrate-api", args=["upgrade", "abc123"], on_progress=print)
    if not ex.succeeded: ...  # ex.message names the exit code; read the logs with cloud.logs

A failed execution is a result, not an exception: the caller shows its logs and diagnosis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from deployctl import errors, interrupt
from deployctl.cloud.clients import Clients
from deployctl.cloud.errors import translated
from deployctl.cloud.resend import Counted
from deployctl.cloud.run import (
    FAILED,
    SUCCEEDED,
    ContainerSpec,
    container_message,
    short_name,
    split_env,
    vpc_access,
    wait_operation,
)


@dataclass(frozen=True)
class Job:
    name: str
    id: str
    etag: str
    generation: int
    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    secrets: dict[str, str]
    execution_count: int
    latest_execution: str  # execution id ("" if never run)
    vpc_connector: str = ""  # the task template's vpc_access.connector ("" when none)


@dataclass(frozen=True)
class Execution:
    name: str
    id: str
    job: str
    done: bool
    succeeded: bool
    task_count: int
    succeeded_count: int
    failed_count: int
    cancelled_count: int
    running_count: int
    message: str
    start_time: datetime | None
    completion_time: datetime | None


def to_job(msg) -> Job:
    container = msg.template.template.containers[0]
    plain, secret = split_env(container)
    return Job(name=msg.name, id=short_name(msg.name), etag=msg.etag, generation=msg.generation,
               image=container.image, command=list(container.command), args=list(container.args), env=plain,
               secrets=secret, execution_count=msg.execution_count,
               latest_execution=short_name(msg.latest_created_execution.name),
               vpc_connector=msg.template.template.vpc_access.connector)


def to_execution(msg) -> Execution:
    completed = next((c for c in msg.conditions if c.type_ == "Completed"), None)
    done = bool(msg.completion_time) or (completed is not None and completed.state in (FAILED, SUCCEEDED))
    return Execution(name=msg.name, id=short_name(msg.name), job=msg.job, done=done,
                     succeeded=done and completed is not None and completed.state == SUCCEEDED,
                     task_count=msg.task_count, succeeded_count=msg.succeeded_count,
                     failed_count=msg.failed_count, cancelled_count=msg.cancelled_count,
                     running_count=msg.running_count, message=completed.message if completed else "",
                     start_time=msg.start_time or None, completion_time=msg.completion_time or None)


class RunJobs:
    def __init__(self, clients: Clients, project: str, region: str) -> None:
        self.clients = clients
        self.parent = f"projects/{project}/locations/{region}"

    def job_name(self, job_id: str) -> str:
        return f"{self.parent}/jobs/{job_id}"

    def get(self, job_id: str) -> Job:
        name = self.job_name(job_id)
        with translated(name, permission="run.jobs.get"):
            return to_job(self.clients.jobs.get_job(name=name, **self.clients.policy.call()))

    def find(self, job_id: str) -> Job | None:
        try:
            return self.get(job_id)
        except errors.NotFound:
            return None

    def apply(self, job_id: str, spec: ContainerSpec, *, max_retries: int = 0, timeout_s: int = 600,
              task_count: int = 1, etag: str | None = None) -> Job:
        """Create the job, or update it to `spec` (with `etag`, only if unchanged since read)."""
        from google.cloud.run_v2 import types as t

        name = self.job_name(job_id)
        task = t.TaskTemplate(containers=[container_message(spec)], max_retries=max_retries,
                              timeout={"seconds": timeout_s})
        if spec.service_account:
            task.service_account = spec.service_account
        access = vpc_access(spec)
        if access is not None:
            task.vpc_access = access
        job = t.Job(template=t.ExecutionTemplate(task_count=task_count, template=task), labels=dict(spec.labels))
        policy = self.clients.policy
        exists = self.find(job_id) is not None
        with translated(name, permission="run.jobs.update" if exists else "run.jobs.create",
                        service_account=spec.service_account):
            if not exists:
                op = self.clients.jobs.create_job(parent=self.parent, job=job, job_id=job_id, **policy.call(mutation=True))
            else:
                job.name, job.etag = name, etag or ""
                op = self.clients.jobs.update_job(job=job, **policy.call(mutation=True))
            return to_job(policy.wait(op))

    def run(self, job_id: str, *, args: list[str] | None = None, env: dict[str, str] | None = None,
            task_count: int | None = None, timeout_s: int | None = None,
            on_progress: Callable[[Execution], None] | None = None, deadline: float | None = None) -> Execution:
        """Run the job (with overrides) and wait for its execution to finish; returns it, failed or not."""
        from google.api_core import exceptions as gexc
        from google.cloud.run_v2 import types as t

        name = self.job_name(job_id)
        overrides = t.RunJobRequest.Overrides()
        if args is not None or env:
            overrides.container_overrides = [t.RunJobRequest.Overrides.ContainerOverride(
                args=list(args or []), clear_args=args == [],
                env=[t.EnvVar(name=k, value=v) for k, v in (env or {}).items()])]
        if task_count:
            overrides.task_count = task_count
        if timeout_s:
            overrides.timeout = {"seconds": timeout_s}
        overridden = bool(overrides.container_overrides or task_count or timeout_s)
        with translated(name, permission="run.jobs.runWithOverrides" if overridden else "run.jobs.run"):
            op = self.clients.jobs.run_job(request=t.RunJobRequest(name=name, overrides=overrides),
                                           **self.clients.policy.call(mutation=True))
            try:
                return to_execution(wait_operation(self.clients, op, on_progress=on_progress,
                                                   deadline=deadline, convert=to_execution))
            except (gexc.FailedPrecondition, gexc.Cancelled):
                if op.metadata is None:
                    raise
                return self.execution(op.metadata.name)
            except KeyboardInterrupt:
                self._cancel_interrupted(job_id, op)
                raise

    CANCEL_DEADLINE = 1.5  # seconds: an interrupted command must end within about 2 s

    def _cancel_interrupted(self, job_id: str, op) -> None:
        """Ctrl-C while waiting on an execution: cancel it rather than leave it running unwatched.

        A cancelled migration task is stopped (SIGTERM): its current migration's transaction rolls back and
        its session, with the advisory lock, ends; re-running the command finishes the job.
        """
        execution = op.metadata.name if op.metadata is not None else ""
        follow = f"gcloud run jobs executions list --job {job_id} --region {self.parent.rsplit('/', 1)[-1]}"
        if not execution:
            interrupt.record(f"job {job_id}: an execution may have started; see `{follow}`")
            return
        short = short_name(execution)
        try:
            policy = self.clients.policy.with_deadline(self.CANCEL_DEADLINE)
            with translated(execution, permission="run.executions.cancel"):
                self.clients.executions.cancel_execution(name=execution, **policy.call(mutation=True))
            interrupt.record(f"job {job_id}: execution {short} cancelled (its migration in progress rolls back)")
        except errors.DeployctlError as e:
            interrupt.record(f"job {job_id}: execution {short} may still be running ({e.message}); follow it "
                             f"with `{follow}` or stop it: gcloud run jobs executions cancel {short}")

    def execution(self, name: str) -> Execution:
        with translated(name, permission="run.executions.get"):
            return to_execution(self.clients.executions.get_execution(name=name, **self.clients.policy.call()))

    def executions(self, job_id: str) -> list[Execution]:
        """Newest first."""
        name = self.job_name(job_id)
        with translated(name, permission="run.executions.list"):
            pager = self.clients.executions.list_executions(parent=name, **self.clients.policy.call())
            return [to_execution(e) for e in pager]

    def cancel(self, execution_name: str) -> Execution:
        """Cancel the execution and return it. A change: never resent once the server may have acted; when our own
        resend is refused (the first attempt already ended it), the execution is read back: ended, that is done."""
        sent = Counted(self.clients.policy.call(mutation=True))
        try:
            with translated(execution_name, permission="run.executions.cancel"):
                op = self.clients.executions.cancel_execution(name=execution_name, **sent.kwargs)
                self.clients.policy.wait(op)
        except errors.CloudError as e:
            if not sent.resent or e.code not in ("conflict", "failed-precondition"):
                raise
            current = self.execution(execution_name)
            if not current.done:
                raise
            return current
        return self.execution(execution_name)
