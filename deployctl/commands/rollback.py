"""`deployctl rollback SERVICE [--to REVISION]`: all traffic to the previous (or the named) ready revision.

Without --to, the target is the newest ready revision older than what serves that passed the health gate and was
not itself withdrawn (deploy/history.py). The newer revisions traffic moves away from are marked as rolled back,
so a plain `deploy` does not quietly promote them again; `--to` a newer revision is a roll forward and marks
nothing.
"""

from __future__ import annotations

from typing import ClassVar

from deployctl import views
from deployctl.context import Context
from deployctl.errors import UsageError
from deployctl.results import Result


class RollbackResult(Result):
    schema_name: ClassVar[str] = "rollback"
    service: str
    revision: str
    previous: list[str]
    url: str

    def view(self) -> list[views.Block]:
        return [views.Line(f"{self.service}: 100% of traffic on {self.revision} "
                           f"(was {', '.join(self.previous) or 'none'}); {self.url}", "ok")]


def rollback(ctx: Context, service: str, to: str | None = None) -> RollbackResult:
    from deployctl.cloud.run import RunServices, TrafficTarget
    from deployctl.deploy import history

    ctx.config.service(service)
    run = RunServices(ctx.clients, ctx.project, ctx.region)
    live = run.get(service)
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
    svc = run.set_traffic(service, [TrafficTarget(percent=100, revision=target.id)], etag=live.etag,
                          deadline=ctx.config.environment.deploy_timeout,
                          annotations=history.after_rollback(live, newer, target.id))
    return RollbackResult(service=service, revision=target.id, previous=live.serving, url=svc.uri)
