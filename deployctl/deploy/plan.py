"""The plan: what a deploy would change, per service, as field-level differences between the desired
ContainerSpec and the one the live service's template holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from deployctl.cloud.run import ContainerSpec, Service
from deployctl.deploy.desired import DesiredService

CREATE, UPDATE, UNCHANGED = "create", "update", "unchanged"
# Fields that describe how the revision is named, not what it runs.
IGNORED = {"revision"}


@dataclass(frozen=True)
class Change:
    field: str  # e.g. "env.LOG_LEVEL", "image", "secrets.DATABASE_URL"
    before: object
    after: object


@dataclass(frozen=True)
class ServicePlan:
    service: str
    action: str  # create | update | unchanged
    changes: list[Change] = field(default_factory=list)
    reason: str = ""  # why an update with no field change (e.g. the service is not Ready)

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
                out[f"{key}.{k}"] = v
        else:
            out[key] = value
    return out


def diff(desired: ContainerSpec, live: ContainerSpec | None) -> list[Change]:
    want = _flatten(desired)
    have = _flatten(live) if live else {}
    return [Change(k, have.get(k), want.get(k)) for k in sorted(set(want) | set(have))
            if want.get(k) != have.get(k)]


def plan(desired: DesiredService, live: Service | None) -> ServicePlan:
    if live is None:
        return ServicePlan(desired.name, CREATE, diff(desired.spec, None))
    changes = diff(desired.spec, live.spec)
    if changes:
        return ServicePlan(desired.name, UPDATE, changes)
    if live.serving != [live.latest_created]:  # rolled back, or a rollout whose gate failed
        where = ", ".join(live.serving) or "no revision"
        return ServicePlan(desired.name, UPDATE, [],
                           reason=f"traffic is on {where}, not on the latest revision {live.latest_created}")
    return ServicePlan(desired.name, UNCHANGED)
