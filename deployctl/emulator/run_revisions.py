"""Service revisions as local processes: start one from its container, gate it on its startup probe, keep it up.

A revision is Ready only once its startup probe passes (HTTP GET 2xx/3xx on the probe's path, or a TCP connect;
by default TCP on PORT) within the probe's budget: initial delay + period x failure threshold. If the process
exits first, or the budget runs out, the revision fails with the reason. As on Cloud Run, the condition points to
the revision's logs and never carries its log lines: a revision may print a secret, and a condition message is
read by callers that do not mask it (the logs are read through Logging, where the reader masks what it knows).
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deployctl.emulator import run_common as rc
from deployctl.emulator.netaddr import free_port
from deployctl.emulator.processes import Child, ProcessManager

log = logging.getLogger("deployctl.emulator")

DEFAULT_PROBE = {"kind": "tcp", "path": "", "initial": 0.0, "timeout": 240.0, "period": 240.0, "threshold": 1}
SETTLE_MARGIN = 30.0  # beyond a probe's own budget, before a rollout stops waiting for an instance
RESTART_BACKOFF = 1.0


@dataclass
class Instance:
    revision: str  # full name
    service: str  # full service name
    port: int
    state: str = "starting"  # starting | ready | failed | stopped
    message: str = ""
    child: Child | None = None
    done: threading.Event = field(default_factory=threading.Event)


def probe_spec(container) -> dict:
    if "startup_probe" not in container:
        return dict(DEFAULT_PROBE)
    p = container.startup_probe
    kind = "http" if "http_get" in p else "tcp"
    return {"kind": kind, "path": p.http_get.path or "/" if kind == "http" else "",
            "initial": float(p.initial_delay_seconds or 0), "timeout": float(p.timeout_seconds or 1),
            "period": float(p.period_seconds or 10), "threshold": int(p.failure_threshold or 3)}


def settle_budget(container) -> float:
    """How long an instance of this container may take to become ready or fail, at most."""
    spec = probe_spec(container)
    return spec["initial"] + spec["period"] * spec["threshold"] + SETTLE_MARGIN


def probe_once(spec: dict, port: int) -> bool:
    timeout = min(spec["timeout"], 5.0)
    try:
        if spec["kind"] == "http":
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            try:
                conn.request("GET", spec["path"], headers={"User-Agent": "GoogleHC/1.0"})
                return 200 <= conn.getresponse().status < 400
            finally:
                conn.close()
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except (OSError, http.client.HTTPException):
        return False


class RevisionRuntime:
    def __init__(self, emulator, processes: ProcessManager, on_change: Callable[[Instance], None]) -> None:
        self.emulator = emulator
        self.processes = processes
        self.on_change = on_change  # called when an instance becomes ready, fails or stops
        self._instances: dict[str, Instance] = {}
        self._lock = threading.Lock()
        self._closing = False

    def get(self, revision: str) -> Instance | None:
        with self._lock:
            return self._instances.get(revision)

    def ready_port(self, revision: str) -> int | None:
        inst = self.get(revision)
        return inst.port if inst and inst.state == "ready" else None

    def ensure_running(self, revision_msg, service_name: str) -> Instance:
        """Start the revision unless it is already starting or ready; returns its instance (wait on .done)."""
        with self._lock:
            inst = self._instances.get(revision_msg.name)
            if inst and inst.state in ("starting", "ready"):
                return inst
            inst = Instance(revision=revision_msg.name, service=service_name, port=free_port())
            self._instances[revision_msg.name] = inst
        threading.Thread(target=self._boot, args=(inst, revision_msg), name=f"boot-{rc.short(inst.revision)}",
                         daemon=True).start()
        return inst

    def stop(self, revision: str, *, wait: bool = True) -> None:
        """Stop the revision's instance (scale it to zero). It is detached at once, so a later ensure_running
        starts a new instance; with wait=False its process ends in the background."""
        with self._lock:
            inst = self._instances.pop(revision, None)
        if inst is None:
            return
        inst.state = "stopped"
        inst.done.set()
        child = inst.child  # None while _boot has not spawned yet: _boot then sees "stopped" and ends it
        if child is None:
            return
        if wait:
            self.processes.terminate_child(child)
        else:
            threading.Thread(target=self.processes.terminate_child, args=(child,), daemon=True,
                             name=f"stop-{rc.short(revision)}").start()

    def stop_all(self) -> None:
        self._closing = True
        with self._lock:
            names = list(self._instances)
        for inst in [self.get(n) for n in names]:
            if inst:
                inst.state = "stopped"
                inst.done.set()
        self.processes.stop_all()
        with self._lock:
            self._instances.clear()

    # --- booting ----------------------------------------------------------------------------------------
    def _spawn(self, inst: Instance, revision_msg) -> Child:
        container = revision_msg.containers[0]
        project = rc.project_of(revision_msg.name)
        svc, rev = rc.short(inst.service), rc.short(inst.revision)
        env = rc.base_env()
        env.update(rc.resolve_env(container, project, self.secret_access))
        env.update({"PORT": str(inst.port), "K_SERVICE": svc, "K_REVISION": rev, "K_CONFIGURATION": svc})
        logs = self.emulator.component("logs")
        labels = {"service_name": svc, "revision_name": rev, "configuration_name": svc,
                  "location": inst.service.split("/")[3], "project_id": project}

        def on_line(stream: str, line: str) -> None:
            logs.write(project=project, stream=stream, line=line, resource_type="cloud_run_revision",
                       resource_labels=labels, labels={"instanceId": f"local-{inst.port}"},
                       file_key=f"service-{svc}")

        def on_exit(code: int) -> None:
            self._exited(inst, revision_msg, code)

        cwd = container.working_dir or str(self.emulator.project_root)
        return self.processes.spawn(inst.revision, "revision", rc.command_line(container), env=env, cwd=cwd,
                                    on_line=on_line, on_exit=on_exit,
                                    info={"service": inst.service, "revision": inst.revision, "port": inst.port})

    def secret_access(self, name: str) -> bytes:
        try:
            sm = self.emulator.component("secretmanager")
        except KeyError as e:
            raise rc.StartError("the local Secret Manager is not running") from e
        return sm.access(name)

    def _boot(self, inst: Instance, revision_msg) -> None:
        try:
            self._boot_and_probe(inst, revision_msg)
        except Exception as e:  # never leave a rollout waiting on an instance that will not settle
            log.exception("emulator: starting revision %s failed", rc.short(inst.revision))
            if inst.child is not None:
                self.processes.terminate_child(inst.child)
            self._settle(inst, "failed", f"the local cloud could not start the revision: {type(e).__name__}: {e}")
        if inst.state == "stopped" and inst.child is not None:  # stopped while booting: end what was spawned
            self.processes.terminate_child(inst.child)

    def _boot_and_probe(self, inst: Instance, revision_msg) -> None:
        container = revision_msg.containers[0]
        spec = probe_spec(container)
        try:
            inst.child = self._spawn(inst, revision_msg)
        except (rc.StartError, OSError) as e:
            self._settle(inst, "failed", f"the container could not be started: {e}")
            return
        if inst.state != "starting":
            return
        unhealthy = self._unhealthy()
        forced = bool({rc.short(inst.revision), rc.short(inst.service), inst.revision, inst.service} & unhealthy)
        start = time.monotonic()
        deadline = start + spec["initial"] + spec["period"] * spec["threshold"]
        time.sleep(spec["initial"])
        interval = 0.05
        while inst.state == "starting":
            if inst.child.popen.poll() is not None:
                inst.child.exited.wait(3)
                self._settle(inst, "failed", f"The user-provided container exited with code "
                             f"{inst.child.popen.returncode} before its startup probe passed."
                             + _see_logs(inst.revision))
                return
            if not forced and probe_once(spec, inst.port):
                self._settle(inst, "ready", "")
                return
            if time.monotonic() >= deadline:
                what = f"HTTP GET {spec['path']}" if spec["kind"] == "http" else "TCP"
                self._settle(inst, "failed",
                             f"The user-provided container failed to start and listen on the port defined by the "
                             f"PORT={inst.port} environment variable within the allocated timeout: startup probe "
                             f"({what}, {spec['threshold']} x {spec['period']:g}s) did not pass."
                             + (" (forced by unhealthy_revisions in faults.json)" if forced else "")
                             + _see_logs(inst.revision))
                self.processes.terminate_child(inst.child)
                return
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(interval * 1.5, 0.5, spec["period"])

    def fail(self, inst: Instance, message: str) -> None:
        """Give up on an instance that did not settle in time (its rollout must end)."""
        if inst.child is not None:
            self.processes.terminate_child(inst.child)
        self._settle(inst, "failed", message)

    def _unhealthy(self) -> set[str]:
        data = self.emulator.faults.data()
        names = data.get("unhealthy_revisions", []) if isinstance(data, dict) else []
        return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()

    def _settle(self, inst: Instance, state: str, message: str) -> None:
        if inst.state != "starting":
            return
        inst.state, inst.message = state, message
        # the revision's conditions first: done ends the rollout's wait, and a client told the rollout failed
        # must find the reason on the revision (it read "Deploying revision." when done came first)
        self.on_change(inst)
        inst.done.set()

    def _exited(self, inst: Instance, revision_msg, code: int) -> None:
        """A ready revision's process died: Cloud Run would start a new instance; so do we, after a pause."""
        if self._closing or inst.state != "ready" or (inst.child and inst.child.stopping):
            return
        log.warning("emulator: revision %s exited with code %s; restarting it", rc.short(inst.revision), code)
        with self._lock:
            if self._instances.get(inst.revision) is inst:
                del self._instances[inst.revision]
        inst.state = "stopped"
        self.on_change(inst)
        time.sleep(RESTART_BACKOFF)
        if not self._closing:
            self.ensure_running(revision_msg, inst.service)

    def instances(self) -> list[Instance]:
        with self._lock:
            return list(self._instances.values())


def _see_logs(revision: str) -> str:
    """Where the revision's output is (Cloud Run says "Logs for this revision might contain more information")."""
    return (" Logs for this revision might contain more information: Cloud Logging, resource.type="
            f"cloud_run_revision, revision_name={rc.short(revision)}.")
