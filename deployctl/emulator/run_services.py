"""Cloud Run v2 Services and Revisions: the RPCs, rollouts gated on readiness, and traffic through a front proxy.

A create, or an update that changes the template, makes a new revision and returns an operation that ends when
that revision is Ready (traffic then follows the service's traffic spec) or has failed (traffic stays where it
was). An update that only changes traffic starts any retained revision it names that is not running.
"""

from __future__ import annotations

import logging
import threading

import grpc

from deployctl.emulator import run_common as rc
from deployctl.emulator.front_proxy import FrontProxy
from deployctl.emulator.operations import Operations
from deployctl.emulator.rpc import Method, RpcError, already_exists, invalid, not_found, service
from deployctl.emulator.run_revisions import Instance, RevisionRuntime
from deployctl.emulator.run_traffic import REVISION, resolve, traffic_statuses
from deployctl.emulator.state import Store

log = logging.getLogger("deployctl.emulator")

SERVICES, REVISIONS, ROLLOUTS, PROXIES = "run_services", "run_revisions", "run_rollouts", "run_proxies"


class ServicesApi:
    def __init__(self, emulator, store: Store, ops: Operations, runtime: RevisionRuntime) -> None:
        self.emulator = emulator
        self.store = store
        self.ops = ops
        self.runtime = runtime
        self.lock = threading.RLock()
        self.proxies: dict[str, FrontProxy] = {}

    # --- stored messages ------------------------------------------------------------------------------
    def _service(self, name: str):
        from google.cloud.run_v2.types import Service

        return rc.fetch(self.store, SERVICES, Service, name, "Service")

    def _revision(self, name: str):
        from google.cloud.run_v2.types import Revision

        return rc.fetch(self.store, REVISIONS, Revision, name, "Revision")

    def _revisions_of(self, service_name: str) -> list:
        from google.cloud.run_v2.types import Revision

        return [rc.load(Revision, d) for d in self.store.list(REVISIONS, service_name + "/revisions/")]

    def _save_service(self, svc) -> None:
        rc.save(self.store, SERVICES, svc)

    def _save_revision(self, rev) -> None:
        rc.save(self.store, REVISIONS, rev)

    # --- Services RPCs --------------------------------------------------------------------------------
    def create_service(self, req):
        rc.check_parent(req.parent)
        rc.check_id("service", req.service_id)
        name = f"{req.parent}/services/{req.service_id}"
        with self.lock:
            if self.store.get(SERVICES, name) is not None:
                raise already_exists(f"Service {name}")
            svc = type(req.service)(req.service)
            svc.name = name
            svc.uid = rc.random_suffix(8) + "-local"
            svc.generation = 0
            svc.create_time = rc.now_ts()
            svc.creator = "local@deployctl"
            self._validate(svc, existing_revisions=set())
            if req.validate_only:
                return self.ops.proto(self.ops.completed(req.parent, svc))
            proxy = self._proxy(name)
            svc.uri = proxy.uri
            svc.urls[:] = [proxy.uri]
            return self.ops.proto(self._rollout(svc, template_changed=True))

    def update_service(self, req):
        from google.cloud.run_v2.types import Service

        name = req.service.name
        with self.lock:
            data = self.store.get(SERVICES, name)
            if data is None:
                if not req.allow_missing:
                    raise not_found(f"Service {name}")
                from google.cloud.run_v2.types import CreateServiceRequest

                parent, _, sid = name.rpartition("/services/")
                return self.create_service(CreateServiceRequest(parent=parent, service_id=sid, service=req.service,
                                                                validate_only=req.validate_only))
            current = rc.load(Service, data)
            rc.check_etag(req.service.etag, current.etag, name)
            svc = Service(req.service)
            for keep in ("uid", "create_time", "creator", "uri", "urls", "latest_ready_revision",
                         "latest_created_revision", "traffic_statuses", "generation", "observed_generation",
                         "terminal_condition", "conditions"):
                setattr(svc, keep, getattr(current, keep))
            old_t, new_t = type(svc.template)(current.template), type(svc.template)(svc.template)
            old_t.revision = new_t.revision = ""
            template_changed = old_t != new_t
            existing = {rc.short(r.name) for r in self._revisions_of(name)}
            self._validate(svc, existing_revisions=existing)
            if req.validate_only:
                return self.ops.proto(self.ops.completed(rc.parent_of(name), svc))
            return self.ops.proto(self._rollout(svc, template_changed=template_changed))

    def get_service(self, req):
        return self._service(req.name)

    def list_services(self, req):
        from google.cloud.run_v2.types import ListServicesResponse, Service

        rc.check_parent(req.parent)
        items = [rc.load(Service, d) for d in self.store.list(SERVICES, req.parent + "/services/")]
        page, token = rc.page(items, req.page_size, req.page_token)
        return ListServicesResponse(services=page, next_page_token=token)

    def delete_service(self, req):
        with self.lock:
            svc = self._service(req.name)
            rc.check_etag(req.etag, svc.etag, req.name)
            if req.validate_only:
                return self.ops.proto(self.ops.completed(rc.parent_of(req.name), svc))
            for key in [k for k in self.proxies if k == req.name or k.startswith(req.name + "#")]:
                self.proxies.pop(key).close()
                self.store.delete(PROXIES, key)
            revisions = self._revisions_of(req.name)
            for rev in revisions:
                self.store.delete(REVISIONS, rev.name)
            self.store.delete(SERVICES, req.name)
            self.store.delete(PROXIES, req.name)
            self.store.delete(ROLLOUTS, req.name)
        # Stopping a process may take its grace period: not under the lock every other Services RPC needs.
        for rev in revisions:
            self.runtime.stop(rev.name)
        svc.delete_time = rc.now_ts()
        return self.ops.proto(self.ops.completed(rc.parent_of(req.name), svc))

    # --- Revisions RPCs -------------------------------------------------------------------------------
    def get_revision(self, req):
        return self._revision(req.name)

    def list_revisions(self, req):
        from google.cloud.run_v2.types import ListRevisionsResponse, Revision

        parent = req.parent
        if parent.endswith("/services/-"):
            prefix = parent[:-1]
            items = [rc.load(Revision, d) for d in self.store.list(REVISIONS, prefix)]
        else:
            self._service(parent)
            items = self._revisions_of(parent)
        items.sort(key=lambda r: r.generation, reverse=True)
        page, token = rc.page(items, req.page_size, req.page_token)
        return ListRevisionsResponse(revisions=page, next_page_token=token)

    def delete_revision(self, req):
        with self.lock:
            rev = self._revision(req.name)
            rc.check_etag(req.etag, rev.etag, req.name)
            svc_name = req.name.split("/revisions/")[0]
            svc = self._service(svc_name)
            if rc.short(rev.name) in {rc.short(r) for r, pct in self._resolve(svc) if pct}:
                raise RpcError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"Revision {rc.short(rev.name)} is serving traffic and cannot be deleted; "
                               "move its traffic to another revision first")
            if req.validate_only:
                return self.ops.proto(self.ops.completed(rc.parent_of(req.name), rev))
            self.store.delete(REVISIONS, rev.name)
        self.runtime.stop(rev.name)
        return self.ops.proto(self.ops.completed(rc.parent_of(req.name), rev))

    # --- rollouts -------------------------------------------------------------------------------------
    def _validate(self, svc, existing_revisions: set[str]) -> None:
        if not svc.template.containers:
            raise invalid("service.template.containers: at least one container is required")
        if svc.template.revision and not svc.template.revision.startswith(rc.short(svc.name) + "-"):
            raise invalid(f"template.revision must start with '{rc.short(svc.name)}-'")
        if not svc.traffic:
            return
        total = sum(t.percent for t in svc.traffic)
        if total != 100:
            raise invalid(f"traffic percentages must add up to 100, got {total}")
        for t in svc.traffic:
            if t.type_ == REVISION and t.revision not in existing_revisions \
                    and t.revision != svc.template.revision:
                raise invalid(f"traffic names revision {t.revision!r}, which does not exist")

    def _rollout(self, svc, *, template_changed: bool) -> str:
        """Store the new generation, start what it needs, and return the operation that follows it."""
        from google.cloud.run_v2.types import Revision

        svc.generation += 1
        svc.update_time = rc.now_ts()
        svc.reconciling = True
        svc.terminal_condition = rc.condition("Ready", "CONDITION_RECONCILING", "Deploying revision.")
        svc.conditions[:] = [rc.condition("ConfigurationsReady", "CONDITION_RECONCILING"),
                             rc.condition("RoutesReady", "CONDITION_RECONCILING")]
        wait_for: list[str] = []
        if template_changed or not svc.latest_created_revision:
            rev_id = svc.template.revision or \
                f"{rc.short(svc.name)}-{svc.generation:05d}-{rc.random_suffix(3)}"
            rev_name = f"{svc.name}/revisions/{rev_id}"
            if self.store.get(REVISIONS, rev_name) is not None:
                raise already_exists(f"Revision {rev_name}")
            t = svc.template
            rev = Revision(name=rev_name, uid=rc.random_suffix(8), generation=svc.generation,
                           labels=dict(t.labels), annotations=dict(t.annotations), create_time=rc.now_ts(),
                           update_time=rc.now_ts(), service=rc.short(svc.name), scaling=t.scaling,
                           vpc_access=t.vpc_access, timeout=t.timeout, service_account=t.service_account,
                           containers=list(t.containers), volumes=list(t.volumes),
                           max_instance_request_concurrency=t.max_instance_request_concurrency,
                           reconciling=True, observed_generation=svc.generation,
                           conditions=[rc.condition("Ready", "CONDITION_RECONCILING", "Deploying revision.")])
            self._save_revision(rev)
            svc.latest_created_revision = rev_name
            wait_for.append(rev_name)
        for target, _ in self._resolve(svc):
            full = f"{svc.name}/revisions/{target}"
            if full not in wait_for:
                wait_for.append(full)
        self._save_service(svc)
        op = self.ops.begin(rc.parent_of(svc.name), svc)
        self.store.put(ROLLOUTS, svc.name, {"operation": op, "generation": svc.generation, "wait_for": wait_for})
        threading.Thread(target=self._follow, args=(svc.name, op, svc.generation, wait_for),
                         name=f"rollout-{rc.short(svc.name)}", daemon=True).start()
        return op

    def _follow(self, service_name: str, op: str, generation: int, wait_for: list[str]) -> None:
        try:
            instances = []
            for rev_name in wait_for:
                rev = self._revision(rev_name)
                instances.append(self.runtime.ensure_running(rev, service_name))
            for inst in instances:
                inst.done.wait()
            self._finish_rollout(service_name, op, generation, instances)
        except RpcError as e:  # the service or a revision was deleted meanwhile
            self.ops.finish(op, error=(e.code, e.message))
        except Exception:
            log.exception("emulator: rollout of %s failed", service_name)
            self.ops.finish(op, error=(grpc.StatusCode.INTERNAL, "emulator error during rollout"))

    def _finish_rollout(self, service_name: str, op: str, generation: int, instances: list[Instance]) -> None:
        with self.lock:
            svc = self._service(service_name)
            failed = [i for i in instances if i.state != "ready"]
            if svc.generation == generation:
                svc.reconciling = False
                svc.observed_generation = generation
                if failed:
                    msg = (f"Revision '{rc.short(failed[0].revision)}' is not ready and cannot serve traffic. "
                           f"{failed[0].message}")
                    svc.terminal_condition = rc.condition("Ready", "CONDITION_FAILED", msg,
                                                          reason="REVISION_FAILED", severity="ERROR")
                    svc.conditions[:] = [rc.condition("ConfigurationsReady", "CONDITION_FAILED", msg,
                                                      reason="REVISION_FAILED", severity="ERROR"),
                                         rc.condition("RoutesReady", "CONDITION_SUCCEEDED")]
                else:
                    svc.terminal_condition = rc.condition("Ready", "CONDITION_SUCCEEDED")
                    svc.conditions[:] = [rc.condition("ConfigurationsReady", "CONDITION_SUCCEEDED"),
                                         rc.condition("RoutesReady", "CONDITION_SUCCEEDED")]
                self._refresh_traffic(svc)
                self._save_service(svc)
                self._apply_routes(svc)
                self.store.delete(ROLLOUTS, service_name)
            else:
                svc = self._service(service_name)
        if failed:
            self.ops.finish(op, error=(grpc.StatusCode.FAILED_PRECONDITION,
                                       svc.terminal_condition.message or failed[0].message), metadata=svc)
        else:
            self.ops.finish(op, response=svc, metadata=svc)

    def on_instance_change(self, inst: Instance) -> None:
        """Record a revision's readiness in its conditions and re-route its service's traffic."""
        with self.lock:
            try:
                rev = self._revision(inst.revision)
                svc = self._service(inst.service)
            except RpcError:
                return
            if inst.state in ("ready", "failed"):
                rev.reconciling = False
                ok = inst.state == "ready"
                rev.conditions[:] = [
                    rc.condition("Ready", "CONDITION_SUCCEEDED" if ok else "CONDITION_FAILED", inst.message,
                                 **({} if ok else {"reason": "REVISION_FAILED", "severity": "ERROR"})),
                    rc.condition("ContainerHealthy", "CONDITION_SUCCEEDED" if ok else "CONDITION_FAILED",
                                 inst.message, **({} if ok else {"severity": "ERROR"})),
                ]
                rev.update_time = rc.now_ts()
                self._save_revision(rev)
                if ok and rev.generation > self._generation_of(svc.latest_ready_revision):
                    svc.latest_ready_revision = rev.name
                    self._refresh_traffic(svc)
                    self._save_service(svc)
            self._apply_routes(svc)

    def _generation_of(self, revision_name: str) -> int:
        data = self.store.get(REVISIONS, revision_name) if revision_name else None
        return int(data.get("generation", 0)) if data else 0

    # --- traffic --------------------------------------------------------------------------------------
    def _resolve(self, svc) -> list[tuple[str, int]]:
        return resolve(svc)

    def _refresh_traffic(self, svc) -> None:
        svc.traffic_statuses[:] = traffic_statuses(svc)

    def _apply_routes(self, svc) -> None:
        proxy = self.proxies.get(svc.name)
        if proxy is None:
            return
        routes = []
        for rev_id, pct in self._resolve(svc):
            port = self.runtime.ready_port(f"{svc.name}/revisions/{rev_id}")
            if port and pct:
                routes.append((port, pct))
        proxy.set_routes(routes)
        tagged = {s.tag: s.revision for s in svc.traffic_statuses if s.tag}
        for key, tag_proxy in list(self.proxies.items()):
            if key.startswith(svc.name + "#"):
                rev_id = tagged.get(key.split("#", 1)[1])
                port = self.runtime.ready_port(f"{svc.name}/revisions/{rev_id}") if rev_id else None
                tag_proxy.set_routes([(port, 100)] if port else [])

    def _proxy(self, service_name: str, tag: str = "") -> FrontProxy:
        """The service's front proxy (or a tag's), on the port it had before a restart when still free."""
        key = f"{service_name}#{tag}" if tag else service_name
        if key in self.proxies:
            return self.proxies[key]
        label = rc.short(service_name) + (f"---{tag}" if tag else "")
        saved = (self.store.get(PROXIES, key) or {}).get("port", 0)
        try:
            proxy = FrontProxy(label, port=saved)
        except OSError:
            log.warning("emulator: port %s for %s is taken; it gets a new uri", saved, label)
            proxy = FrontProxy(label)
        self.proxies[key] = proxy
        self.store.put(PROXIES, key, {"port": proxy.port})
        return proxy

    # --- lifecycle ------------------------------------------------------------------------------------
    def resume(self) -> None:
        """After a restart: rebind proxies, restart ready revisions, and pick up interrupted rollouts."""
        from google.cloud.run_v2.types import Service

        for data in self.store.list(SERVICES):
            svc = rc.load(Service, data)
            with self.lock:
                proxy = self._proxy(svc.name)
                if proxy.uri != svc.uri or any(s.tag for s in svc.traffic_statuses):
                    svc.uri = proxy.uri
                    svc.urls[:] = [proxy.uri]
                    self._refresh_traffic(svc)
                    self._save_service(svc)
            for rev in self._revisions_of(svc.name):
                if any(c.type_ == "Ready" and c.state == c.State.CONDITION_SUCCEEDED for c in rev.conditions):
                    self.runtime.ensure_running(rev, svc.name)
            rollout = self.store.get(ROLLOUTS, svc.name)
            if rollout:
                threading.Thread(target=self._follow, args=(svc.name, rollout["operation"], rollout["generation"],
                                                            rollout["wait_for"]), daemon=True).start()

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
        self.proxies.clear()

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        from google.cloud.run_v2 import types as t
        from google.longrunning import operations_pb2

        Op = operations_pb2.Operation  # noqa: N806
        return [
            service("google.cloud.run.v2.Services", {
                "CreateService": Method(self.create_service, t.CreateServiceRequest, Op),
                "GetService": Method(self.get_service, t.GetServiceRequest, t.Service),
                "ListServices": Method(self.list_services, t.ListServicesRequest, t.ListServicesResponse),
                "UpdateService": Method(self.update_service, t.UpdateServiceRequest, Op),
                "DeleteService": Method(self.delete_service, t.DeleteServiceRequest, Op),
            }),
            service("google.cloud.run.v2.Revisions", {
                "GetRevision": Method(self.get_revision, t.GetRevisionRequest, t.Revision),
                "ListRevisions": Method(self.list_revisions, t.ListRevisionsRequest, t.ListRevisionsResponse),
                "DeleteRevision": Method(self.delete_revision, t.DeleteRevisionRequest, Op),
            }),
        ]
