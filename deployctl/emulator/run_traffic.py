"""A service's traffic spec resolved to revisions, and the traffic statuses Cloud Run reports for it."""

from __future__ import annotations

from deployctl.emulator import run_common as rc

LATEST, REVISION = 1, 2  # TrafficTargetAllocationType


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


def traffic_statuses(svc) -> list:
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
            s.uri = svc.uri  # one local address; tags are not routed separately
    return statuses
