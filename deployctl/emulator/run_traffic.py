"""A service's traffic: its spec resolved to revisions, the statuses Cloud Run reports for it, and the front
proxies that carry it (one per service, so its `uri` stays the same across revisions, and one per traffic tag,
each with a `uri` of its own that reaches the tagged revision only)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from deployctl.emulator import run_common as rc
from deployctl.emulator.front_proxy import FrontProxy
from deployctl.emulator.netaddr import stable_port
from deployctl.emulator.rpc import invalid
from deployctl.emulator.state import Store

log = logging.getLogger("deployctl.emulator")

LATEST, REVISION = 1, 2  # TrafficTargetAllocationType
PROXIES = "run_proxies"


def resolve(svc) -> list[tuple[str, int]]:
    """(revision id, percent) per traffic target; LATEST is the latest ready revision (none: no route)."""
    targets = [(t.type_, t.revision, t.percent) for t in svc.traffic] or [(LATEST, "", 100)]
    out = []
    for type_, revision, percent in targets:
        if type_ == REVISION:
            out.append((revision, percent))
        elif svc.latest_ready_revision:
            out.append((rc.short(svc.latest_ready_revision), percent))
    return out


def validate(svc, existing_revisions: set[str]) -> None:
    """A service's template and traffic spec, checked as Cloud Run checks them before a rollout."""
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
        if t.type_ == REVISION and t.revision not in existing_revisions and t.revision != svc.template.revision:
            raise invalid(f"traffic names revision {t.revision!r}, which does not exist")


def previous_routing(current) -> dict:
    """What a rollout record keeps of the routing before an update: the traffic spec, and the revisions that
    served (id, percent), to put back if the update's targets fail to start (restore_routing)."""
    return {"previous_traffic": [rc.dump(t) for t in current.traffic],
            "previous_serving": [[s.revision, s.percent] for s in current.traffic_statuses if s.percent and s.revision]}


def restore_routing(svc, record: dict | None, failed: set[str]) -> list[str]:
    """Cloud Run keeps the last routing that was ready: when the traffic of `svc` gives a share to a revision in
    `failed` (full names), put the previous traffic spec back. Returns the ids that serve again ([]: unchanged)."""
    from google.cloud.run_v2.types import TrafficTarget

    previous = (record or {}).get("previous_traffic")
    if previous is None or not any(pct and f"{svc.name}/revisions/{rev}" in failed for rev, pct in resolve(svc)):
        return []
    del svc.traffic[:]
    svc.traffic.extend(rc.load(TrafficTarget, d) for d in previous)
    log.info("emulator: %s: a traffic target did not start; the previous routing is kept", rc.short(svc.name))
    return [rev for rev, pct in resolve(svc) if pct]


def serving(statuses) -> set[str]:
    """Revision ids that take a share of the service's traffic, per its traffic statuses."""
    return {s.revision for s in statuses if s.percent and s.revision}


def traffic_statuses(svc, tag_uri: Callable[[str], str] = lambda tag: "") -> list:
    from google.cloud.run_v2.types import TrafficTargetStatus

    statuses = []
    for t in list(svc.traffic) or [None]:
        if t is None or t.type_ != REVISION:
            rev = rc.short(svc.latest_ready_revision) if svc.latest_ready_revision else ""
            statuses.append(TrafficTargetStatus(type_=LATEST, revision=rev, percent=t.percent if t else 100,
                                                tag=t.tag if t else ""))
        else:
            statuses.append(TrafficTargetStatus(type_=REVISION, revision=t.revision, percent=t.percent,
                                                tag=t.tag))
    for s in statuses:
        if s.tag:
            s.uri = tag_uri(s.tag)
    return statuses


class Router:
    """The front proxies of every service, on ports that stay the same across restarts when they can."""

    def __init__(self, store: Store, runtime, seed: str) -> None:
        self.store = store
        self.runtime = runtime
        self.seed = seed  # the state dir: two local clouds on one machine pick different ports
        self.proxies: dict[str, FrontProxy] = {}

    @staticmethod
    def _key(service_name: str, tag: str = "") -> str:
        return f"{service_name}#{tag}" if tag else service_name

    def proxy(self, service_name: str, tag: str = "") -> FrontProxy:
        """The service's front proxy (or a tag's), on the port it had before a restart when still free."""
        key = self._key(service_name, tag)
        if key in self.proxies:
            return self.proxies[key]
        label = rc.short(service_name) + (f"---{tag}" if tag else "")
        saved = (self.store.get(PROXIES, key) or {}).get("port", 0)
        proxy = None
        if saved:
            try:
                proxy = FrontProxy(label, port=saved)
            except OSError:
                log.warning("emulator: port %s for %s is taken; it gets a new uri", saved, label)
        if proxy is None:
            proxy = self._new_proxy(key, label)
        self.proxies[key] = proxy
        self.store.put(PROXIES, key, {"port": proxy.port})
        return proxy

    def _new_proxy(self, key: str, label: str) -> FrontProxy:
        avoid = {rec.get("port") for rec in self.store.list(PROXIES)} | {p.port for p in self.proxies.values()}
        for _ in range(5):
            port = stable_port(f"{self.seed}|{key}", avoid)
            if not port:
                break
            try:
                return FrontProxy(label, port=port)
            except OSError:  # taken between the check and the bind
                avoid.add(port)
        return FrontProxy(label)

    def tag_uri(self, service_name: str, tag: str) -> str:
        proxy = self.proxies.get(self._key(service_name, tag))
        return proxy.uri if proxy else ""

    def sync_tags(self, svc) -> None:
        """A proxy for every tag in the traffic spec; the proxies of tags no longer there are closed."""
        wanted = {t.tag for t in svc.traffic if t.tag}
        for tag in wanted:
            self.proxy(svc.name, tag)
        prefix = svc.name + "#"
        for key in [k for k in self.proxies if k.startswith(prefix) and k[len(prefix):] not in wanted]:
            self.proxies.pop(key).close()
            self.store.delete(PROXIES, key)

    def apply(self, svc, fallback: list | None = None) -> None:
        """Point the service's proxy, and its tags' proxies, at the ready instances of their revisions.
        `fallback` ([revision id, percent]...: what served before a rollout in flight) serves while no target
        is ready and the proxy routes nowhere (as after a restart)."""
        proxy = self.proxies.get(svc.name)
        if proxy is not None:
            ready = self._ready_ports(svc.name)
            wanted, complete = self._routes(svc.name, resolve(svc))
            still_serving = [(p, pct) for p, pct in proxy.routes if p in ready]
            if not complete and not still_serving and fallback:
                still_serving, _ = self._routes(svc.name, fallback)
            # A target that is not ready (starting, as after a scale to zero, or failed to start): the route moves
            # only once every target can take its share; until then what serves now keeps serving.
            proxy.set_routes(wanted if complete or not still_serving else still_serving)
        tagged = {s.tag: s.revision for s in svc.traffic_statuses if s.tag}
        for tag, rev_id in tagged.items():
            tag_proxy = self.proxies.get(self._key(svc.name, tag))
            if tag_proxy is not None:
                port = self.runtime.ready_port(f"{svc.name}/revisions/{rev_id}") if rev_id else None
                tag_proxy.set_routes([(port, 100)] if port else [])

    def _routes(self, service_name: str, targets) -> tuple[list[tuple[int, int]], bool]:
        """(port, percent) of the ready targets with a share, and whether every target with a share is ready."""
        routes, complete = [], True
        for rev_id, pct in targets:
            port = self.runtime.ready_port(f"{service_name}/revisions/{rev_id}")
            if port and pct:
                routes.append((port, pct))
            elif pct:
                complete = False
        return routes, complete

    def routed(self, service_name: str) -> set[str]:
        """Full names of the revisions the service's proxies send requests to right now."""
        by_port = {i.port: i.revision for i in self.runtime.instances()
                   if i.service == service_name and i.state == "ready"}
        prefix = service_name + "#"
        return {by_port[p] for key, proxy in self.proxies.items() if key == service_name or key.startswith(prefix)
                for p, _ in proxy.routes if p in by_port}

    def _ready_ports(self, service_name: str) -> set[int]:
        return {i.port for i in self.runtime.instances() if i.service == service_name and i.state == "ready"}

    def drop(self, service_name: str) -> None:
        prefix = service_name + "#"
        for key in [k for k in self.proxies if k == service_name or k.startswith(prefix)]:
            self.proxies.pop(key).close()
        for rec_key in [service_name, *self.store.keys(PROXIES, prefix)]:
            self.store.delete(PROXIES, rec_key)

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
        self.proxies.clear()
