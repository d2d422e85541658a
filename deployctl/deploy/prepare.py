"""Before anything changes: per service, the desired state, what runs (the service and its retained revisions),
where its migrations stand, and the plan. Every read is concurrent and bounded.

A service's depends_on that are not deployed yet are deployed with it, first (as `docker compose up` starts a
service's dependencies); the plan says why they are included. One that is deployed but not Ready is a warning.

A `${service:NAME}` reference in env takes NAME's deployed URL. When NAME is created in the same run its URL is
not known yet: the service is planned with the reference as written and prepared again once NAME is deployed
(it is in depends_on, so that happens first).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from deployctl import errors
from deployctl.cloud.run import RunServices, Service
from deployctl.context import Context
from deployctl.deploy import desired as desired_mod
from deployctl.deploy import migrations
from deployctl.deploy.plan import Live, ServicePlan, plan
from deployctl.deploy.workers import pool

MAX_PARALLEL = 8


@dataclass
class Prepared:
    desired: desired_mod.DesiredService
    live: Live | None
    plan: ServicePlan
    warnings: list[str] = field(default_factory=list)

    @property
    def service(self) -> Service | None:
        return self.live.service if self.live else None


class Preparer:
    def __init__(self, ctx: Context, *, force: bool = False, migrations_status: bool = True) -> None:
        self.ctx = ctx
        self.force = force
        self.migrations_status = migrations_status
        self.run = RunServices(ctx.clients, ctx.project, ctx.region)
        self.pinner = desired_mod.SecretPinner(ctx)
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    def url_of(self, name: str) -> str | None:
        """A service's URL (remembered once known; asked again while it is not deployed)."""
        with self._lock:
            if name in self._urls:
                return self._urls[name]
        svc = self.run.find(name)
        if svc is None or not svc.uri:
            return None
        with self._lock:
            self._urls[name] = svc.uri
        return svc.uri

    def live(self, name: str) -> Live | None:
        svc = self.run.find(name)
        if svc is None:
            return None
        return Live(svc, {r.id: r for r in self.run.revisions(name)})

    def with_missing_dependencies(self, names: list[str]) -> tuple[list[str], dict[str, str]]:
        """`names` plus the depends_on services (transitively) that are not deployed, those first; and why each
        added one is there."""
        services = self.ctx.config.services
        added: dict[str, str] = {}
        queue = list(names)
        while queue:
            name = queue.pop(0)
            for dep in services[name].depends_on:
                if dep in names or dep in added or self.run.find(dep) is not None:
                    continue
                added[dep] = f"not deployed yet, and {name} depends on it: deployed first"
                queue.append(dep)
        ordered = [n for n in services if n in added]
        return ordered + list(names), added

    def one(self, name: str, selection: list[str] | None = None) -> Prepared:
        """Prepare one service, its reads in sequence (a rollout prepares again this way)."""
        status = migrations.status(self.ctx, name) if self.migrations_status else None
        return self._plan(self._read(name, selection or [name]), status)

    def all(self, names: list[str]) -> dict[str, Prepared | errors.DeployctlError]:
        out: dict[str, Prepared | errors.DeployctlError] = {}
        with pool(min(2 * MAX_PARALLEL, 2 * len(names))) as workers:
            status = {n: workers.submit(migrations.status, self.ctx, n) for n in names if self.migrations_status}
            reads = {n: workers.submit(self._read, n, names) for n in names}
            for name in names:
                try:
                    out[name] = self._plan(reads[name].result(), status[name].result() if name in status else None)
                except errors.ConfigError:
                    raise
                except errors.DeployctlError as e:
                    out[name] = e
        return out

    def _read(self, name: str, selection: list[str]) -> Prepared:
        """The desired state, what runs and the dependency warnings; planned by _plan once migrations are read."""
        want = desired_mod.build(self.ctx, name, self.pinner, self.url_of)
        live = self.live(name)
        return Prepared(want, live, plan(want, live), self._dependency_warnings(name, selection))

    def _plan(self, prep: Prepared, status) -> Prepared:
        prep.plan = plan(prep.desired, prep.live, status, force=self.force)
        return prep

    def _dependency_warnings(self, name: str, selection: list[str]) -> list[str]:
        """depends_on services this run does not deploy: they must exist and be Ready (said, not enforced)."""
        out = []
        for dep in self.ctx.config.services[name].depends_on:
            if dep in selection:
                continue
            svc = self.run.find(dep)
            if svc is None:
                out.append(f"depends on {dep}, which is not deployed (deploy it first: `deployctl deploy {dep}`)")
            elif not svc.ready:
                out.append(f"depends on {dep}, which is not Ready ({svc.ready_message or 'no Ready condition'})")
        return out
