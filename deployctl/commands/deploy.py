"""`deployctl deploy [SERVICE...] [--all] [--dry-run]`: plan, migrate, roll out behind a health gate, shift
traffic; then the status matrix.

Exit codes: 0 everything deployed or unchanged; 1 a service failed (or was skipped because a dependency
failed). With --dry-run --detailed-exitcode (as Terraform's -detailed-exitcode): 0 no changes, 2 changes
pending, 1 the plan itself failed. The JSON envelope always carries `changes_pending`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from deployctl import views
from deployctl.commands.status import StatusResult
from deployctl.context import Context
from deployctl.errors import ExitCode, UsageError
from deployctl.results import Result

STYLE = {"deployed": "ok", "unchanged": "dim", "failed": "fail", "skipped": "skip", "planned": "warn"}


class FieldChange(BaseModel):
    field: str
    before: Any = None
    after: Any = None


class ServiceOutcome(BaseModel):
    service: str
    status: str  # deployed | unchanged | failed | skipped | planned
    action: str | None = None  # create | update | unchanged (the plan)
    changes: list[FieldChange] = []
    plan_reason: str = ""
    revision: str | None = None
    previous: list[str] = []
    url: str | None = None
    reason: str = ""
    migrations: str = ""
    failed_probe: str | None = None
    logs: list[str] = []


class DeployResult(Result):
    schema_name: ClassVar[str] = "deploy"
    dry_run: bool
    detailed_exitcode: bool = False
    changes_pending: bool
    services: list[ServiceOutcome]
    status: StatusResult | None = None

    def exit_code(self) -> ExitCode:
        if any(s.status in ("failed", "skipped") for s in self.services):
            return ExitCode.FAILED
        if self.dry_run and self.detailed_exitcode and self.changes_pending:
            return ExitCode(2)
        return ExitCode.OK

    def errors(self) -> list[dict]:
        return [{"code": f"deploy-{s.status}", "message": f"{s.service}: {s.reason}",
                 "hint": "fix the cause above and run `deployctl deploy` again" if s.status == "failed"
                 else f"deploy {s.service}'s dependencies first"}
                for s in self.services if s.status in ("failed", "skipped")]

    def view(self) -> list[views.Block]:
        blocks: list[views.Block] = []
        if self.dry_run:
            for s in self.services:
                blocks.append(_plan_tree(s))
            blocks.append(views.Line("changes pending (dry run: nothing was changed)" if self.changes_pending
                                     else "no changes", "warn" if self.changes_pending else "ok"))
            return blocks
        rows = [[s.service, views.Cell(s.status, STYLE.get(s.status, "")), s.revision or "-",
                 s.reason or s.migrations or "-"] for s in self.services]
        blocks.append(views.Table(["service", "result", "revision", "detail"], rows, title="deploy"))
        for s in self.services:
            if s.failed_probe:
                blocks.append(views.Line(f"{s.service}: failed probe: {s.failed_probe}", "fail"))
            if s.logs:
                blocks.append(views.Line(f"{s.service}: last log lines of {s.revision}:", "fail"))
                blocks.append(views.Line("\n".join("  " + line for line in s.logs), "dim"))
        if self.status is not None:
            blocks += self.status.view()
        return blocks


def _verify_hook(verify: bool):
    if not verify:
        return None
    from deployctl.verify.deploy_hook import verify_after_traffic

    return verify_after_traffic


def _plan_tree(s: ServiceOutcome) -> views.Tree:
    if s.status == "failed":
        return views.Tree(views.Node(views.fail(f"{s.service}: cannot plan: {s.reason}")))
    label = {"create": "create", "update": "update", "unchanged": "unchanged"}.get(s.action or "", s.status)
    head = f"{s.service}: {label}" + (f" ({s.plan_reason})" if s.plan_reason else "")
    children = [views.Node(f"{c.field}: {_show(c.before)} → {_show(c.after)}") for c in s.changes]
    return views.Tree(views.Node(views.Cell(head, "warn" if s.action != "unchanged" else "dim"), children))


def _show(value: object) -> str:
    return "(none)" if value is None or value == [] else repr(value) if isinstance(value, str) else str(value)


def deploy(ctx: Context, services: list[str] | None = None, all_: bool = False, dry_run: bool = False,
           migrate: bool = True, detailed_exitcode: bool = False, successes: int = 3,
           gate_deadline: float = 60.0, show_status: bool = True, verify: bool = False,
           images: list[str] | None = None) -> DeployResult:
    from deployctl.deploy.rollout import Options, deploy_all

    if images:  # the whole run (desired services, migration jobs, status) sees the overridden images
        ctx.config = ctx.config.with_images(images)
    if not services and not all_:
        raise UsageError("name the services to deploy, or pass --all",
                         hint=f"services: {', '.join(ctx.config.services) or 'none'}")
    if detailed_exitcode and not dry_run:
        raise UsageError("--detailed-exitcode goes with --dry-run", hint="add --dry-run")
    names = ctx.config.select(services, all_)
    outcomes = deploy_all(ctx, names, Options(dry_run=dry_run, migrate=migrate, successes=successes,
                                              gate_deadline=gate_deadline, after_traffic=_verify_hook(verify)))
    rows = [ServiceOutcome(
        service=o.service, status=o.status, action=o.plan.action if o.plan else None,
        changes=[FieldChange(field=c.field, before=c.before, after=c.after) for c in (o.plan.changes if o.plan
                                                                                       else [])],
        plan_reason=o.plan.reason if o.plan else "", revision=o.revision, previous=o.previous, url=o.url,
        reason=o.reason, migrations=o.migrations, failed_probe=o.failed_probe, logs=o.logs) for o in outcomes]
    pending = any(o.plan is not None and o.plan.pending for o in outcomes)
    status = None
    if not dry_run and show_status:
        from deployctl.commands.status import status as status_of

        status = status_of(ctx, names)
    return DeployResult(dry_run=dry_run, detailed_exitcode=detailed_exitcode, changes_pending=pending,
                        services=rows, status=status)
