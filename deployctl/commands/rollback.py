"""`deployctl rollback SERVICE [--to REVISION]`: all traffic to the previous (or the named) ready revision.

Without --to, the target is the newest ready revision older than what serves that passed the health gate and was
not itself withdrawn (deploy/history.py). The newer revisions traffic moves away from are marked as rolled back,
so a plain `deploy` does not quietly promote them again; `--to` a newer revision is a roll forward and marks
nothing. The marks are written only once the traffic has moved: a retained revision that was scaled to zero
starts again first, and one that cannot start (its pinned secret version disabled, its probe failing) leaves the
traffic, and the marks, where they were.
"""

from __future__ import annotations

from typing import ClassVar

from deployctl import errors, views
from deployctl.context import Context
from deployctl.errors import UsageError
from deployctl.results import Result


class RollbackResult(Result):
    schema_name: ClassVar[str] = "rollback"
    service: str
    revision: str
    previous: list[str]
    url: str
    warnings: list[str] = []

    def view(self) -> list[views.Block]:
        return [views.Line(f"{self.service}: 100% of traffic on {self.revision} "
                           f"(was {', '.join(self.previous) or 'none'}); {self.url}", "ok"),
                *[views.Line(f"{self.service}: warning: {w}", "warn") for w in self.warnings]]


def rollback(ctx: Context, service: str, to: str | None = None) -> RollbackResult:
    from deployctl.cloud.run import RunServices, TrafficTarget
    from deployctl.deploy import history

    ctx.config.service(service)
    run = RunServices(ctx.clients, ctx.project, ctx.region)
    try:
        live = run.get(service)
    except errors.NotFound:
        raise errors.NotFound(f"service {service} is not deployed in {ctx.env}: there is nothing to roll back",
                              hint=f"deploy it first: deployctl deploy {service}") from None
    revisions = run.revisions(service)  # newest first
    by_id = {r.id: r for r in revisions}
    if to:
        target = by_id.get(to)
        if target is None:
            raise UsageError(f"service {service} has no revision {to!r}",
                             hint=f"its revisions: {', '.join(by_id) or 'none'}")
        if not target.ready:
            raise UsageError(f"revision {to} is not ready ({target.ready_message or 'no Ready condition'}); "
                             "refusing to send traffic to it",
                             hint="pick a ready revision (`deployctl status` shows them) or deploy a fix")
    else:
        target = history.rollback_target(live, revisions)
    ctx.progress(service, f"moving all traffic to {target.id}")
    # Only revisions newer than the target are rolled back; `--to` a newer one is a roll forward.
    newer = [r for r in live.serving if r in by_id and by_id[r].generation > target.generation]
    deadline = ctx.config.environment.deploy_timeout
    try:
        svc = run.set_traffic(service, [TrafficTarget(percent=100, revision=target.id)], etag=live.etag,
                              deadline=deadline)
    except errors.CloudError as e:
        if e.code != "revision-failed":
            raise
        raise _could_not_start(ctx, run, live, target) from None
    warnings = []
    try:
        svc = _record(run, service, svc, history.after_rollback(live, newer, target.id), deadline)
    except errors.DeployctlError as e:
        warnings.append(f"the traffic moved, but the rollback could not be recorded in the service ({e.message}); "
                        f"a plain `deployctl deploy` may promote {', '.join(newer) or 'the newer revision'} again")
    return RollbackResult(service=service, revision=target.id, previous=live.serving, url=svc.uri,
                          warnings=warnings)


def _record(run, service: str, svc, notes: dict[str, str], deadline: float):
    """The rollback marks, in a second update once the traffic has moved. A status-only change of the etag (the
    generation is still the one our traffic change made) is retried once against the fresh etag."""
    try:
        return run.annotate(service, notes, etag=svc.etag, deadline=deadline)
    except errors.Conflict:
        fresh = run.get(service)
        if fresh.generation != svc.generation:
            raise
        return run.annotate(service, notes, etag=fresh.etag, deadline=deadline)


def _could_not_start(ctx: Context, run, live, target) -> errors.CloudError:
    """The target did not start: traffic goes back to what served (when the service's stored routing moved,
    or it is left not Ready), its log lines are shown masked, and the error says where traffic is."""
    from deployctl.cloud.run import TrafficTarget
    from deployctl.deploy.rollout import revision_logs

    previous = [TrafficTarget(percent=t.percent, revision=t.revision) for t in live.traffic if t.percent and t.revision]
    fresh = run.get(live.id)
    note = ""
    if previous and (fresh.serving != live.serving or not fresh.ready):
        try:
            fresh = run.set_traffic(live.id, previous, etag=fresh.etag, deadline=ctx.config.environment.deploy_timeout)
        except errors.DeployctlError as e:
            note = f" Putting the previous traffic back failed too: {e.message}"
    for line in revision_logs(ctx, live.id, target.id, target.spec):
        ctx.progress(live.id, f"  | {line}", "fail")
    reason = run.revision(live.id, target.id).ready_message
    return errors.CloudError(
        f"service {live.id}: rollback target {target.id} could not start; traffic stays on "
        f"{', '.join(fresh.serving) or 'no revision'}. {reason}{note}",
        hint=f"read its log lines (shown above, or in Cloud Logging for revision {target.id}); roll back to another "
             "revision with --to REVISION, or deploy a fix",
        code="revision-failed", details={"service": live.name, "revision": target.id})
