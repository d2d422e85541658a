"""Cloud Run v2 Jobs and Executions: each task of an execution is a local process; exit codes decide the outcome.

RunJob returns an operation whose metadata is the Execution and that ends with it (or with an error carrying
it in the metadata) once every task has succeeded, or has failed after max_retries, timed out or was cancelled.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass, field

import grpc

from deployctl.emulator import run_common as rc
from deployctl.emulator.operations import Operations
from deployctl.emulator.processes import ProcessManager
from deployctl.emulator.rpc import Method, RpcError, already_exists, invalid, not_found, service
from deployctl.emulator.state import Store

log = logging.getLogger("deployctl.emulator")

JOBS, EXECUTIONS, EXEC_OPS = "run_jobs", "run_executions", "run_execution_operations"
DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT = 600.0
# CompletionStatus of an ExecutionReference
EXEC_SUCCEEDED, EXEC_FAILED, EXEC_RUNNING, EXEC_CANCELLED = 1, 2, 3, 5


@dataclass
class Running:
    name: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    keys: set[str] = field(default_factory=set)


class JobsApi:
    def __init__(self, emulator, store: Store, ops: Operations, processes: ProcessManager,
                 secret_access) -> None:
        self.emulator = emulator
        self.store = store
        self.ops = ops
        self.processes = processes
        self.secret_access = secret_access
        self.lock = threading.RLock()
        self.running: dict[str, Running] = {}
        self.stopping = False

    def _job(self, name: str):
        from google.cloud.run_v2.types import Job

        return rc.fetch(self.store, JOBS, Job, name, "Job")

    def _execution(self, name: str):
        from google.cloud.run_v2.types import Execution

        return rc.fetch(self.store, EXECUTIONS, Execution, name, "Execution")

    def _save(self, collection: str, msg) -> None:
        rc.save(self.store, collection, msg)

    # --- Jobs -------------------------------------------------------------------------------------------
    def create_job(self, req):
        rc.check_parent(req.parent)
        rc.check_id("job", req.job_id)
        name = f"{req.parent}/jobs/{req.job_id}"
        with self.lock:
            if self.store.get(JOBS, name) is not None:
                raise already_exists(f"Job {name}")
            job = type(req.job)(req.job)
            self._validate(job)
            job.name, job.uid, job.generation = name, rc.random_suffix(8) + "-local", 1
            job.create_time = job.update_time = rc.now_ts()
            job.creator = "local@deployctl"
            job.observed_generation = 1
            job.terminal_condition = rc.condition("Ready", "CONDITION_SUCCEEDED")
            if not req.validate_only:
                self._save(JOBS, job)
            return self.ops.proto(self.ops.completed(req.parent, job))

    def update_job(self, req):
        from google.cloud.run_v2.types import CreateJobRequest, Job

        name = req.job.name
        with self.lock:
            data = self.store.get(JOBS, name)
            if data is None:
                if not req.allow_missing:
                    raise not_found(f"Job {name}")
                parent, _, jid = name.rpartition("/jobs/")
                return self.create_job(CreateJobRequest(parent=parent, job_id=jid, job=req.job,
                                                        validate_only=req.validate_only))
            current = rc.load(Job, data)
            rc.check_etag(req.job.etag, current.etag, name)
            job = Job(req.job)
            self._validate(job)
            for keep in ("uid", "create_time", "creator", "execution_count", "latest_created_execution"):
                setattr(job, keep, getattr(current, keep))
            job.generation = job.observed_generation = current.generation + 1
            job.update_time = rc.now_ts()
            job.terminal_condition = rc.condition("Ready", "CONDITION_SUCCEEDED")
            if not req.validate_only:
                self._save(JOBS, job)
            return self.ops.proto(self.ops.completed(rc.parent_of(name), job))

    def get_job(self, req):
        return self._job(req.name)

    def list_jobs(self, req):
        from google.cloud.run_v2.types import Job, ListJobsResponse

        rc.check_parent(req.parent)
        items = [rc.load(Job, d) for d in self.store.list(JOBS, req.parent + "/jobs/")]
        page, token = rc.page(items, req.page_size, req.page_token)
        return ListJobsResponse(jobs=page, next_page_token=token)

    def delete_job(self, req):
        with self.lock:
            job = self._job(req.name)
            rc.check_etag(req.etag, job.etag, req.name)
            if req.validate_only:
                return self.ops.proto(self.ops.completed(rc.parent_of(req.name), job))
            # Gone for every other RPC now, under the lock RunJob takes: no execution can start while the
            # ones below are stopped (which may take their grace period: not under the lock).
            self.store.delete(JOBS, req.name)
            executions = [d["name"] for d in self.store.list(EXECUTIONS, req.name + "/executions/")]
        for name in executions:
            self._cancel(name)
            self.store.delete(EXECUTIONS, name)
        job.delete_time = rc.now_ts()
        return self.ops.proto(self.ops.completed(rc.parent_of(req.name), job))

    def _validate(self, job) -> None:
        if not job.template.template.containers:
            raise invalid("job.template.template.containers: at least one container is required")

    # --- RunJob -----------------------------------------------------------------------------------------
    def run_job(self, req):
        from google.cloud.run_v2.types import Execution, ExecutionReference

        with self.lock:
            job = self._job(req.name)
            rc.check_etag(req.etag, job.etag, req.name)
            task = type(job.template.template)(job.template.template)
            ov = req.overrides
            for co in ov.container_overrides:
                target = next((c for c in task.containers if c.name == co.name), None) if co.name \
                    else task.containers[0]
                if target is None:
                    raise invalid(f"overrides name container {co.name!r}, which the job does not have")
                if co.args or co.clear_args:
                    target.args[:] = list(co.args)
                if co.env:
                    names = {e.name for e in co.env}
                    kept = [e for e in target.env if e.name not in names]
                    target.env[:] = kept + list(co.env)
            if "timeout" in ov:
                task.timeout = ov.timeout
            task_count = ov.task_count or job.template.task_count or 1
            exec_id = f"{rc.short(job.name)}-{rc.random_suffix(5)}"
            name = f"{job.name}/executions/{exec_id}"
            now = rc.now_ts()
            ex = Execution(name=name, uid=rc.random_suffix(8), generation=1, labels=dict(job.template.labels),
                           create_time=now, start_time=now, job=rc.short(job.name),
                           parallelism=job.template.parallelism or task_count, task_count=task_count,
                           template=task, reconciling=True, observed_generation=1, running_count=task_count,
                           conditions=[rc.condition("ResourcesAvailable", "CONDITION_SUCCEEDED"),
                                       rc.condition("Started", "CONDITION_SUCCEEDED"),
                                       rc.condition("Completed", "CONDITION_RECONCILING")])
            if req.validate_only:
                return self.ops.proto(self.ops.completed(rc.parent_of(name), ex))
            self._save(EXECUTIONS, ex)
            job.execution_count += 1
            job.latest_created_execution = ExecutionReference(name=name, create_time=now,
                                                              completion_status=EXEC_RUNNING)
            self._save(JOBS, job)
            op = self.ops.begin(rc.parent_of(name), ex)
            self.store.put(EXEC_OPS, name, {"operation": op})
            run = Running(name)
            self.running[name] = run
        threading.Thread(target=self._execute, args=(ex, run, op), name=f"exec-{exec_id}", daemon=True).start()
        return self.ops.proto(op)

    def _execute(self, ex, run: Running, op: str) -> None:
        results: dict[int, tuple[bool, str, int]] = {}  # index -> (succeeded, reason, retries)
        slots = threading.Semaphore(max(1, ex.parallelism))

        def one(index: int) -> None:
            with slots:
                results[index] = self._run_task(ex, index, run)

        try:
            threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(ex.task_count)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if self.stopping:  # not a user's cancel: the execution failed because the local cloud stopped
                self._complete(ex.name, op, results, cancelled=False,
                               message="the emulator stopped while the execution was running")
            else:
                self._complete(ex.name, op, results, cancelled=run.cancelled.is_set())
        except Exception:
            log.exception("emulator: execution %s failed", ex.name)
            self.ops.finish(op, error=(grpc.StatusCode.INTERNAL, "emulator error while running the execution"))
        finally:
            self.running.pop(ex.name, None)
            run.finished.set()

    def _run_task(self, ex, index: int, run: Running) -> tuple[bool, str, int]:
        container = ex.template.containers[0]
        retries = ex.template.max_retries if "max_retries" in ex.template else DEFAULT_RETRIES
        timeout = rc.duration_seconds(ex.template.timeout if "timeout" in ex.template else None, DEFAULT_TIMEOUT)
        job_name = ex.name.split("/executions/")[0]
        project, job_id, exec_id = rc.project_of(ex.name), rc.short(job_name), rc.short(ex.name)
        logs = self.emulator.component("logs")
        reason = ""
        for attempt in range(retries + 1):
            if run.cancelled.is_set():
                return False, "cancelled", attempt
            try:
                env = rc.base_env()
                env.update(rc.resolve_env(container, project, self.secret_access))
                argv = rc.command_line(container)
            except rc.StartError as e:
                return False, f"the container could not be started: {e}", attempt
            env.update({"CLOUD_RUN_JOB": job_id, "CLOUD_RUN_EXECUTION": exec_id,
                        "CLOUD_RUN_TASK_INDEX": str(index), "CLOUD_RUN_TASK_ATTEMPT": str(attempt),
                        "CLOUD_RUN_TASK_COUNT": str(ex.task_count)})
            if job_id in self._failing() or job_name in self._failing():
                argv = [sys.executable, "-c", "import sys; print('task forced to fail by failing_jobs in "
                        "faults.json', file=sys.stderr); sys.exit(1)"]
            labels = {"run.googleapis.com/execution_name": exec_id, "run.googleapis.com/task_index": str(index),
                      "run.googleapis.com/task_attempt": str(attempt)}
            resource = {"job_name": job_id, "location": ex.name.split("/")[3], "project_id": project}

            def on_line(stream: str, line: str, labels=labels, resource=resource) -> None:
                logs.write(project=project, stream=stream, line=line, resource_type="cloud_run_job",
                           resource_labels=resource, labels=labels, file_key=f"job-{job_id}")

            key = f"{ex.name}/tasks/{index}/attempts/{attempt}"
            cwd = container.working_dir or str(self.emulator.project_root)
            try:
                child = self.processes.spawn(key, "task", argv, env=env, cwd=cwd, on_line=on_line,
                                             info={"job": job_name, "execution": ex.name, "task": index})
            except OSError as e:
                return False, f"the container could not be started: {e}", attempt
            run.keys.add(key)
            if run.cancelled.is_set():  # cancelled while it was being spawned: _cancel did not see its key
                self.processes.terminate(key)
                return False, "cancelled", attempt
            if not child.exited.wait(timeout):
                self.processes.terminate(key)
                reason = f"Task {index} timed out after {timeout:g}s and was stopped."
            elif run.cancelled.is_set():
                return False, "cancelled", attempt
            elif child.exit_code == 0:
                return True, "", attempt
            else:
                reason = f"Task {index} failed: the container exited with code {child.exit_code}."
            run.keys.discard(key)
        return False, reason, retries

    def _failing(self) -> set[str]:
        return set(self.emulator.faults.data().get("failing_jobs", []))

    def _complete(self, name: str, op: str, results: dict, *, cancelled: bool, message: str = "") -> None:
        with self.lock:
            try:
                ex = self._execution(name)
            except RpcError:
                self.ops.finish(op, error=(grpc.StatusCode.NOT_FOUND, f"Execution {name} was deleted"))
                return
            ok = [i for i, r in results.items() if r[0]]
            bad = sorted(i for i, r in results.items() if not r[0])
            ex.succeeded_count = len(ok)
            ex.retried_count = sum(r[2] for r in results.values())
            ex.running_count = 0
            ex.reconciling = False
            ex.completion_time = rc.now_ts()
            if cancelled:
                ex.cancelled_count = ex.task_count - len(ok)
                message = message or f"Execution {rc.short(name)} was cancelled."
                cond = rc.condition("Completed", "CONDITION_FAILED", message, execution_reason="CANCELLED")
                status = EXEC_CANCELLED
            elif bad or message:
                ex.failed_count = len(bad) if bad else ex.task_count - len(ok)
                first = results[bad[0]][1] if bad else ""
                message = message or (f"Execution {rc.short(name)} failed: {len(bad)}/{ex.task_count} "
                                      f"task(s) failed. {first}")
                cond = rc.condition("Completed", "CONDITION_FAILED", message,
                                    execution_reason="NON_ZERO_EXIT_CODE", severity="ERROR")
                status = EXEC_FAILED
            else:
                message = f"Execution {rc.short(name)} completed: {len(ok)}/{ex.task_count} task(s) succeeded."
                cond = rc.condition("Completed", "CONDITION_SUCCEEDED", message)
                status = EXEC_SUCCEEDED
            ex.conditions[:] = [c for c in ex.conditions if c.type_ != "Completed"] + [cond]
            self._save(EXECUTIONS, ex)
            job_name = name.split("/executions/")[0]
            data = self.store.get(JOBS, job_name)
            if data is not None:
                job = self._job(job_name)
                if job.latest_created_execution.name == name:
                    job.latest_created_execution.completion_time = ex.completion_time
                    job.latest_created_execution.completion_status = status
                    self._save(JOBS, job)
            self.store.delete(EXEC_OPS, name)
        if status == EXEC_SUCCEEDED:
            self.ops.finish(op, response=ex, metadata=ex)
        else:
            code = grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.FAILED_PRECONDITION
            self.ops.finish(op, error=(code, message), metadata=ex)

    # --- Executions -------------------------------------------------------------------------------------
    def get_execution(self, req):
        return self._execution(req.name)

    def list_executions(self, req):
        from google.cloud.run_v2.types import Execution, ListExecutionsResponse

        if req.parent.endswith("/jobs/-"):
            items = [rc.load(Execution, d) for d in self.store.list(EXECUTIONS, req.parent[:-1])]
        else:
            self._job(req.parent)
            items = [rc.load(Execution, d) for d in self.store.list(EXECUTIONS, req.parent + "/executions/")]
        items.sort(key=lambda e: e.create_time, reverse=True)
        page, token = rc.page(items, req.page_size, req.page_token)
        return ListExecutionsResponse(executions=page, next_page_token=token)

    def _cancel(self, name: str) -> None:
        run = self.running.get(name)
        if run is None:
            return
        run.cancelled.set()
        for key in list(run.keys):
            self.processes.terminate(key)
        run.finished.wait(10)

    def cancel_execution(self, req):
        ex = self._execution(req.name)
        rc.check_etag(req.etag, ex.etag, req.name)
        if not req.validate_only:
            self._cancel(req.name)
        return self.ops.proto(self.ops.completed(rc.parent_of(req.name), self._execution(req.name)))

    def delete_execution(self, req):
        ex = self._execution(req.name)
        rc.check_etag(req.etag, ex.etag, req.name)
        if not req.validate_only:
            self._cancel(req.name)
            self.store.delete(EXECUTIONS, req.name)
        return self.ops.proto(self.ops.completed(rc.parent_of(req.name), ex))

    # --- lifecycle --------------------------------------------------------------------------------------
    def fail_interrupted(self) -> None:
        """Executions that were running when the emulator died cannot be resumed: they failed."""
        for d in self.store.list(EXECUTIONS):
            if d.get("reconciling"):
                op = (self.store.get(EXEC_OPS, d["name"]) or {}).get("operation", "")
                self._complete(d["name"], op, {}, cancelled=False,
                               message="emulator restarted while the execution was running")

    def stop(self) -> None:
        self.stopping = True
        for name in list(self.running):
            run = self.running.get(name)
            if run:
                run.cancelled.set()

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        from google.cloud.run_v2 import types as t
        from google.longrunning import operations_pb2

        Op = operations_pb2.Operation  # noqa: N806
        return [
            service("google.cloud.run.v2.Jobs", {
                "CreateJob": Method(self.create_job, t.CreateJobRequest, Op),
                "GetJob": Method(self.get_job, t.GetJobRequest, t.Job),
                "ListJobs": Method(self.list_jobs, t.ListJobsRequest, t.ListJobsResponse),
                "UpdateJob": Method(self.update_job, t.UpdateJobRequest, Op),
                "DeleteJob": Method(self.delete_job, t.DeleteJobRequest, Op),
                "RunJob": Method(self.run_job, t.RunJobRequest, Op),
            }),
            service("google.cloud.run.v2.Executions", {
                "GetExecution": Method(self.get_execution, t.GetExecutionRequest, t.Execution),
                "ListExecutions": Method(self.list_executions, t.ListExecutionsRequest,
                                         t.ListExecutionsResponse),
                "CancelExecution": Method(self.cancel_execution, t.CancelExecutionRequest, Op),
                "DeleteExecution": Method(self.delete_execution, t.DeleteExecutionRequest, Op),
            }),
        ]
