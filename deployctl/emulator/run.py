"""The "run" component: Cloud Run v2 (Services, Revisions, Jobs, Executions) and its long-running Operations.

On start it first ends any process a previous emulator left behind (after a SIGKILL), then restarts the
revisions that were Ready behind their services' front proxies (on the same ports), resumes interrupted
rollouts, and marks executions that were running as failed.
"""

from __future__ import annotations

import logging

from deployctl.emulator.operations import Operations
from deployctl.emulator.processes import ProcessManager, end_recorded, left_running
from deployctl.emulator.run_jobs import JobsApi
from deployctl.emulator.run_revisions import RevisionRuntime
from deployctl.emulator.run_services import ServicesApi

log = logging.getLogger("deployctl.emulator")


class CloudRun:
    def __init__(self, emulator) -> None:
        self.emulator = emulator
        store = emulator.store
        self.operations = Operations(store)
        self.processes = ProcessManager(store, str(emulator.state_dir))
        self.runtime = RevisionRuntime(emulator, self.processes, on_change=self._on_instance_change)
        self.services = ServicesApi(emulator, store, self.operations, self.runtime)
        self.jobs = JobsApi(emulator, store, self.operations, self.processes, self.runtime.secret_access)

    def _on_instance_change(self, inst) -> None:
        self.services.on_instance_change(inst)

    def handlers(self) -> list:
        return self.operations.handlers() + self.services.handlers() + self.jobs.handlers()

    def start(self) -> None:
        leftovers = end_recorded(self.emulator.store, str(self.emulator.state_dir))
        if leftovers:
            log.info("emulator: ended %d process(es) left by a previous run", len(leftovers))
        self.jobs.fail_interrupted()
        self.services.resume()

    def stop(self) -> None:
        self.jobs.stop()
        self.runtime.stop_all()
        self.services.close()

    def list_processes(self) -> list[dict]:
        """Every live child: {"key", "kind": "revision"|"task", "pid", "service"/"revision"/"port" or
        "job"/"execution"/"task"}, plus one {"kind": "proxy", "service", "port"} per front proxy."""
        out = self.processes.list()
        for name, proxy in self.services.proxies.items():
            out.append({"key": f"{name}/proxy", "kind": "proxy", "pid": None, "service": name, "port": proxy.port})
        return out


def create(emulator) -> CloudRun:
    return CloudRun(emulator)


def cleanup(state_dir) -> None:
    """After a crash of the emulator: end the service and job processes it had started (recorded in its state)."""
    from pathlib import Path

    from deployctl.emulator.state import Store

    end_recorded(Store(Path(state_dir) / "state"), str(Path(state_dir)))


def leftovers(state_dir) -> list[dict]:
    """The service and job processes a crashed emulator left running."""
    from pathlib import Path

    from deployctl.emulator.state import Store

    return left_running(Store(Path(state_dir) / "state"), str(Path(state_dir)))
