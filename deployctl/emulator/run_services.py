"""Cloud Run v2 Services and Revisions: the RPCs, rollouts gated on readiness, and traffic through a front proxy.

A create, or an update that changes the template, makes a new revision and returns an operation that ends when
that revision is Ready (traffic then follows the service's traffic spec) or has failed (traffic stays where it
was). An update that only changes traffic starts any retained revision it names that is not running, and the
route moves once it passes its startup probe (a cold start). A rollout whose traffic gives a share to a revision
that failed to start keeps the last routing that was ready: the previous traffic spec is put back (run_traffic).

As Cloud Run scales a revision without traffic to zero, a revision that serves no traffic and carries no tag
has its process stopped, except the one that served most recently before the current ones: it stays warm, so
that a rollback is only a routing change.
"""

from __future__ import annotations

import logging
import threading

import grpc

from deployctl.emulator import run_common as rc
from deployctl.emulator import run_traffic
from deployctl.emulator.operations import Operations
from deployctl.emulator.rpc import Method, RpcError, already_exists, not_found, service
from deployctl.emulator.run_revisions import Instance, RevisionRuntime, settle_budget
from deployctl.emulator.run_traffic import Router, resolve, serving, traffic_statuses, validate
from deployctl.emulator.state import Store

log = logging.getLogger("deployctl.emulator")

SERVICES, REVISIONS, ROLLOUTS = "run_services", "run_revisions", "run_rollouts"
WARM = "run_warm"  # service name -> {"revision": the previously serving revision kept running}


class ServicesApi:
    def __init__(self, emulator, store: Store, ops: Operations, runtime: RevisionRuntime) -> None:
        self.emulator = emulator
        self.store = store
        self.ops = ops
        self.runtime = runtime
        self.lock = threading.RLock()
        self.router = Router(store, runtime, str(emulator.state_dir))

    @property
    def proxies(self) -> dict:
        return self.router.proxies

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
            validate(svc, existing_revisions=set())
            if req.validate_only:
                return self.ops.proto(self.ops.completed(req.parent, svc))
            proxy = self.router.proxy(name)
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
            validate(svc, existing_revisions=existing)
            if req.validate_only:
                return self.ops.proto(self.ops.completed(rc.parent_of(name), svc))
            return self.ops.proto(self._rollout(svc, template_changed=template_changed,
                                                previous=run_traffic.previous_routing(current)))

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
            self.router.drop(req.name)
            revisions = self._revisions_of(req.name)
            for rev in revisions:
                self.store.delete(REVISIONS, rev.name)
            self.store.delete(SERVICES, req.name)
            self.store.delete(WARM, req.name)
            rollout = self.store.delete(ROLLOUTS, req.name)
        for op in _rollout_ops(rollout):
            self.ops.finish(op, error=(grpc.StatusCode.ABORTED, f"Service {req.name} was deleted"))
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
            if rev.name == svc.latest_created_revision:
                raise RpcError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"Revision {rc.short(rev.name)} is the latest revision of service "
                               f"{rc.short(svc_name)} and cannot be deleted; deploy a newer one first")
            if req.validate_only:
                return self.ops.proto(self.ops.completed(rc.parent_of(req.name), rev))
            self.store.delete(REVISIONS, rev.name)
        self.runtime.stop(rev.name)
        return self.ops.proto(self.ops.completed(rc.parent_of(req.name), rev))

    # --- rollouts -------------------------------------------------------------------------------------
    def _rollout(self, svc, *, template_changed: bool, previous: dict | None = None) -> str:
        """Store the new generation, start what it needs, and return the operation that follows it; `previous`
        is the routing before this change (previous_routing), kept until the rollout ends."""
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
        revisions = [self._revision(n) for n in wait_for]
        self._save_service(svc)
        op = self.ops.begin(rc.parent_of(svc.name), svc)
        # An earlier rollout still in flight keeps its own follower; if the emulator restarts before it ends,
        # only the newest is resumed, and the earlier operations are ended then (see resume).
        superseded = [o for o in _rollout_ops(self.store.get(ROLLOUTS, svc.name)) if self.ops.is_pending(o)]
        self.store.put(ROLLOUTS, svc.name, {"operation": op, "generation": svc.generation, "wait_for": wait_for,
                                            "superseded": superseded, **(previous or {})})
        # Started now, under the lock, so that no route change can find a target not even starting.
        started = [self._start(rev, svc.name) for rev in revisions]
        threading.Thread(target=self._follow, args=(svc.name, op, svc.generation, wait_for, started),
                         name=f"rollout-{rc.short(svc.name)}", daemon=True).start()
        return op

    def _start(self, rev, service_name: str) -> tuple[Instance, float]:
        return self.runtime.ensure_running(rev, service_name), settle_budget(rev.containers[0])

    def _follow(self, service_name: str, op: str, generation: int, wait_for: list[str],
                started: list[tuple[Instance, float]] | None = None) -> None:
        try:
            instances = started or [self._start(self._revision(n), service_name) for n in wait_for]
            for inst, budget in instances:
                if not inst.done.wait(budget):
                    self.runtime.fail(inst, f"The revision did not become ready or fail within {budget:g}s.")
            self._finish_rollout(service_name, op, generation, [inst for inst, _ in instances])
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
                restored = failed and run_traffic.restore_routing(svc, self.store.get(ROLLOUTS, service_name),
                                                      {i.revision for i in failed})
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
                self.store.delete(ROLLOUTS, service_name)
                for rev_id in restored or []:  # what serves again may have been scaled to zero meanwhile
                    self.runtime.ensure_running(self._revision(f"{svc.name}/revisions/{rev_id}"), svc.name)
                self._apply_routes(svc)
                self._scale_to_zero(svc)
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
        """Recompute the traffic statuses (tag proxies included); remember which revision stopped serving."""
        before = serving(svc.traffic_statuses)
        self.router.sync_tags(svc)
        svc.traffic_statuses[:] = traffic_statuses(svc, tag_uri=lambda tag: self.router.tag_uri(svc.name, tag))
        lost = before - serving(svc.traffic_statuses)
        if lost:
            newest = max(lost, key=lambda r: self._generation_of(f"{svc.name}/revisions/{r}"))
            self.store.put(WARM, svc.name, {"revision": f"{svc.name}/revisions/{newest}"})

    def _apply_routes(self, svc) -> None:
        # While a rollout is in flight, what served before it is the fallback (after a restart the proxies
        # remember no route, and the rollout's targets may not be running yet).
        self.router.apply(svc, fallback=(self.store.get(ROLLOUTS, svc.name) or {}).get("previous_serving", []))

    def _needed(self, svc) -> set[str]:
        """Full names of the revisions of `svc` that must keep running: those with traffic or a tag, the one
        kept warm for a rollback, those a rollout in flight waits for, and those the proxies still route to."""
        names = {f"{svc.name}/revisions/{r}" for r, pct in self._resolve(svc) if pct}
        names |= {f"{svc.name}/revisions/{s.revision}" for s in svc.traffic_statuses if s.tag and s.revision}
        names |= {f"{svc.name}/revisions/{t.revision}" for t in svc.traffic if t.tag and t.revision}
        warm = (self.store.get(WARM, svc.name) or {}).get("revision")
        if warm:
            names.add(warm)
        rollout = self.store.get(ROLLOUTS, svc.name) or {}
        names.update(rollout.get("wait_for", []))
        names.update(f"{svc.name}/revisions/{r}" for r, _ in rollout.get("previous_serving", []))
        return names | self.router.routed(svc.name)

    def _scale_to_zero(self, svc) -> None:
        """Stop the instances of revisions nothing needs (Cloud Run scales them to zero); under self.lock."""
        needed = self._needed(svc)
        for inst in self.runtime.instances():
            if inst.service == svc.name and inst.revision not in needed:
                log.info("emulator: revision %s serves no traffic: scaled to zero", rc.short(inst.revision))
                self.runtime.stop(inst.revision, wait=False)

    # --- lifecycle ------------------------------------------------------------------------------------
    def resume(self) -> None:
        """After a restart: rebind proxies, restart the revisions that are needed, and pick up interrupted
        rollouts (the operations they had superseded end now: nothing follows them any more)."""
        from google.cloud.run_v2.types import Service

        for data in self.store.list(SERVICES):
            svc = rc.load(Service, data)
            with self.lock:
                proxy = self.router.proxy(svc.name)
                self.router.sync_tags(svc)
                tag_uris = [self.router.tag_uri(svc.name, s.tag) if s.tag else s.uri for s in svc.traffic_statuses]
                if proxy.uri != svc.uri or tag_uris != [s.uri for s in svc.traffic_statuses]:
                    svc.uri = proxy.uri  # only when a port could not be had again: the etag changes
                    svc.urls[:] = [proxy.uri]
                    self._refresh_traffic(svc)
                    self._save_service(svc)
                needed = self._needed(svc)
            for rev in self._revisions_of(svc.name):
                ready = any(c.type_ == "Ready" and c.state == c.State.CONDITION_SUCCEEDED for c in rev.conditions)
                if ready and rev.name in needed:
                    self.runtime.ensure_running(rev, svc.name)
            rollout = self.store.get(ROLLOUTS, svc.name)
            if rollout:
                for op in rollout.get("superseded", []):
                    self.ops.finish(op, error=(grpc.StatusCode.ABORTED,
                                               f"Superseded by a later change to service {rc.short(svc.name)} "
                                               "while the local cloud restarted; read the service for its state"))
                threading.Thread(target=self._follow, args=(svc.name, rollout["operation"], rollout["generation"],
                                                            rollout["wait_for"]), daemon=True).start()

    def close(self) -> None:
        self.router.close()

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


def _rollout_ops(rollout: dict | None) -> list[str]:
    """The operations a stored rollout record stands for: its own and those it superseded."""
    return [rollout["operation"], *rollout.get("superseded", [])] if rollout else []
