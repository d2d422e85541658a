"""The plan: what a deploy would change, per service, against what *serves* (the revision with the traffic, not
the latest template: after a rollback those differ), with the migrations that are pending.

A service is unchanged only when its serving revision runs the desired config, is Ready, and passed the health
gate (history.py), and its database is at head. Otherwise the plan says how it gets there:

- a new revision (the config differs from every retained revision, or none is Ready);
- traffic to a retained revision that already runs the desired config (no duplicate revision), gated first;
- a gate of the serving revision that never passed one (a failed first create, a service deployed before
  deployctl kept that history), or whose service is left untidy (a leftover tag from a failed rollout, or not
  Ready though what serves is): all traffic to it again, which clears both;
- the pending migrations alone (the serving revision already runs the config).

Moving traffic back to a revision that was rolled back or failed verify is refused (`blocked`) unless forced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from deployctl.cloud.run import ContainerSpec, Revision, Service
from deployctl.deploy import history
from deployctl.deploy.desired import DIGEST_LABEL, DesiredService
from deployctl.deploy.migrations import MigrationStatus

CREATE, UPDATE, UNCHANGED = "create", "update", "unchanged"
# Fields that describe how the revision is named, not what it runs.
IGNORED = {"revision"}
# Labels that take part in the diff: the config digest. The deployctl-version label does not (a tool upgrade
# alone must not redeploy every service).
DIFFED_LABELS = {DIGEST_LABEL}


@dataclass(frozen=True)
class Change:
    field: str  # e.g. "env.LOG_LEVEL", "image", "secrets.DATABASE_URL"
    before: object
    after: object


@dataclass(frozen=True)
class Live:
    """What runs: the service and its retained revisions (by id)."""

    service: Service
    revisions: dict[str, Revision] = field(default_factory=dict)

    @property
    def main(self) -> str | None:
        """The revision with the most traffic."""
        best = max((t for t in self.service.traffic if t.percent and t.revision), key=lambda t: t.percent,
                   default=None)
        return best.revision if best else None

    def spec_of(self, revision: str | None) -> ContainerSpec | None:
        rev = self.revisions.get(revision or "")
        if rev is None or rev.spec is None:
            return None
        return replace(rev.spec, ingress=self.service.ingress)  # ingress is the service's, not the revision's


@dataclass(frozen=True)
class ServicePlan:
    service: str
    action: str  # create | update | unchanged
    changes: list[Change] = field(default_factory=list)  # against the serving revision
    reason: str = ""  # how the update happens when it is not simply a new revision
    new_revision: bool = False
    target: str | None = None  # an existing revision to gate and move the traffic to (no new revision)
    serving: str | None = None  # the revision the changes are against
    migrate: bool = False  # migrations are pending (or cannot be read: the runner finds out)
    migrations: str = ""  # "c95e7a4f1d03 → d1e2f3a4b5c6 (1 pending)", "N/A", "unknown: ..."
    blocked: str = ""  # why this plan must not run without a config change or --force

    @property
    def pending(self) -> bool:
        return self.action != UNCHANGED


def _flatten(spec: ContainerSpec) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in asdict(spec).items():
        if key in IGNORED:
            continue
        if isinstance(value, dict):
            for k, v in value.items():
                if key != "labels" or k in DIFFED_LABELS:
                    out[f"{key}.{k}"] = v
        else:
            out[key] = value
    return out


def _value(value: object) -> object:
    return None if value == [] or value == {} else value  # an empty list is no setting, as on a create


def diff(desired: ContainerSpec, live: ContainerSpec | None) -> list[Change]:
    want = _flatten(desired)
    have = _flatten(live) if live else {}
    return [Change(k, have.get(k), want.get(k)) for k in sorted(set(want) | set(have))
            if _value(want.get(k)) != _value(have.get(k))]


def plan(desired: DesiredService, live: Live | None, migrations: MigrationStatus | None = None, *,
         force: bool = False) -> ServicePlan:
    mig = migrations.describe() if migrations is not None else ""
    migrate = migrations is not None and migrations.state in ("pending", "unknown")
    if live is None:
        return ServicePlan(desired.name, CREATE, diff(desired.spec, None), new_revision=True, migrate=migrate,
                           migrations=mig)
    svc, main = live.service, live.main
    base = live.spec_of(main)
    changes = diff(desired.spec, base if base is not None else svc.spec)
    common = {"serving": main, "migrate": migrate, "migrations": mig}
    if not changes and main and base is not None:
        ready = live.revisions[main].ready
        split = len(svc.serving) > 1
        if ready and history.passed_gate(svc, main) and not split:
            if untidy := _untidy(svc):
                return _guarded(ServicePlan(desired.name, UPDATE, target=main, **common,
                                            reason=f"{main} already runs this config, but {untidy}: all traffic "
                                                   f"to {main} again, after its health gate"), svc, force)
            if migrate:
                return ServicePlan(desired.name, UPDATE, reason=f"{main} already runs this config; migrations only",
                                   **common)
            return ServicePlan(desired.name, UNCHANGED, **common)
        if ready:
            why = (f"traffic is split across {', '.join(svc.serving)}: all of it to {main}, after its health gate"
                   if split else f"{main} serves this config but never passed deployctl's health gate: gate it")
            return _guarded(ServicePlan(desired.name, UPDATE, target=main, reason=why, **common), svc, force)
        return ServicePlan(desired.name, UPDATE, new_revision=True, **common,
                           reason=f"{main} runs this config but is not ready: a new revision with it")
    retained = _retained_match(desired, live, exclude=main)
    if retained is not None and not any(c.field == "ingress" for c in changes):
        return _guarded(ServicePlan(desired.name, UPDATE, changes, target=retained, **common,
                                    reason=f"traffic → {retained}: a retained revision already runs this config "
                                           "(no new revision)"), svc, force)
    return ServicePlan(desired.name, UPDATE, changes, new_revision=True, **common)


def _untidy(svc: Service) -> str:
    """What a failed rollout can leave behind on a service whose serving revision is fine ("" when nothing)."""
    tags = [f"{t.tag} ({t.revision})" for t in svc.traffic if t.tag and not t.percent]
    if tags:
        return f"traffic still carries the tag {', '.join(tags)}"
    return "" if svc.ready else "the service is not Ready"


def _retained_match(desired: DesiredService, live: Live, *, exclude: str | None) -> str | None:
    """The newest Ready retained revision whose config is the desired one."""
    for rev in sorted(live.revisions.values(), key=lambda r: r.generation, reverse=True):
        if rev.id == exclude or not rev.ready or rev.labels.get(DIGEST_LABEL) != desired.digest:
            continue
        if not diff(desired.spec, live.spec_of(rev.id)):
            return rev.id
    return None


def _guarded(p: ServicePlan, svc: Service, force: bool) -> ServicePlan:
    """A plan that moves traffic to a withdrawn revision is blocked unless forced."""
    why = history.withdrawn(svc, p.target or "")
    if why is None:
        return p
    if force:
        return replace(p, reason=f"{p.reason}; --force: undoes the withdrawal of {p.target} ({why})")
    return replace(p, blocked=f"would undo the rollback of {p.target} ({why}); refusing without a config change "
                              "or --force")
