"""The status matrix's data (DESIGN §9): per service, its revisions and traffic, Ready, migrations, and the
health of each path with latency. Every read and probe runs concurrently, each bounded, so twenty services
cost about as much as one."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from deployctl import errors
from deployctl.cloud.run import RunServices, Service
from deployctl.context import Context
from deployctl.deploy import gate as gate_mod
from deployctl.deploy import migrations
from deployctl.deploy.gate import ProbeResult
from deployctl.deploy.migrations import MigrationStatus

MAX_THREADS = 64


@dataclass
class ServiceStatus:
    service: str
    deployed: bool
    error: str | None = None  # the service could not be read
    error_code: str | None = None  # its DeployctlError code (permission-denied, not-found, ...)
    error_hint: str | None = None
    url: str | None = None
    serving: list[tuple[str, int, str]] = field(default_factory=list)  # (revision, percent, tag)
    latest_created: str | None = None
    latest_ready: str | None = None
    ready: bool = False
    ready_message: str = ""
    migrations: MigrationStatus = field(default_factory=lambda: MigrationStatus("n/a"))
    health: list[ProbeResult] = field(default_factory=list)

    @property
    def pinned(self) -> bool:
        """Traffic is not simply 100% on the latest revision (rollback, split, or a failed rollout)."""
        live = [r for r, pct, _ in self.serving if pct]
        return bool(self.latest_created) and live != [self.latest_created]

    @property
    def healthy(self) -> bool:
        return self.deployed and self.ready and all(h.ok for h in self.health)


def collect(ctx: Context, names: list[str], *, probe_timeout: float = gate_mod.PROBE_TIMEOUT) -> list[ServiceStatus]:
    ctx.config, ctx.clients  # noqa: B018 - build once, before the threads use them
    run = RunServices(ctx.clients, ctx.project, ctx.region)
    health_paths = {n: ctx.config.services[n].health for n in names}
    n_probes = sum(len(p) for p in health_paths.values()) or 1
    threads = min(MAX_THREADS, len(names) * 2 + n_probes)
    with ThreadPoolExecutor(max_workers=threads) as pool, \
            gate_mod.client(timeout=probe_timeout, connections=n_probes) as http:
        mig: dict[str, Future] = {n: pool.submit(migrations.status, ctx, n) for n in names}
        live: dict[str, Future] = {n: pool.submit(run.find, n) for n in names}
        rows: dict[str, ServiceStatus] = {}
        probes: dict[str, list[Future]] = {}
        for name in names:  # probes start as soon as each service's URL is known
            try:
                svc: Service | None = live[name].result()
            except errors.Unreachable:  # no cloud, no matrix: one clear error instead of a table of them
                raise
            except errors.DeployctlError as e:
                if errors.is_credentials_error(e):  # likewise without credentials: one error, not one per service
                    raise
                rows[name] = ServiceStatus(name, False, error=e.message, error_code=e.code, error_hint=e.hint)
                continue
            if svc is None:
                rows[name] = ServiceStatus(name, False)
                continue
            rows[name] = ServiceStatus(
                name, True, url=svc.uri, serving=[(t.revision or "", t.percent, t.tag) for t in svc.traffic],
                latest_created=svc.latest_created or None, latest_ready=svc.latest_ready or None,
                ready=svc.ready, ready_message=svc.ready_message)
            probes[name] = [pool.submit(gate_mod.probe, http, svc.uri, p) for p in health_paths[name]]
        for name in names:
            rows[name].migrations = mig[name].result()
            rows[name].health = [f.result() for f in probes.get(name, [])]
    return [rows[n] for n in names]
