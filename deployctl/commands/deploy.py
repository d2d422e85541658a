"""`deployctl deploy [SERVICE...] [--all] [--dry-run]`: plan, migrate, roll out behind a health gate, shift
traffic; then the status matrix.

Exit codes: 0 everything deployed or unchanged and the final matrix is healthy; 3 deployed, but the matrix is
degraded (a service not Ready or unhealthy, migrations pending or unknown); 1 a service failed, was skipped
because a dependency failed, failed its checks (--verify), or its plan was refused. With --dry-run
--detailed-exitcode (Terraform's -detailed-exitcode convention): 0 no changes, 2 changes pending, 1 the plan
itself failed. 2 is also the exit code of a usage or config error: the JSON envelope tells them apart (a plan
with changes has "ok": true and data.changes_pending; a usage error has "ok": false and an error code).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from deployctl import views
from deployctl.commands import names_or_all
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
    changes: list[FieldChange] = []  # against the serving revision
    plan_reason: str = ""
    new_revision: bool = False
    target: str | None = None  # a retained revision the plan moves the traffic to (no new revision)
    plan_migrations: str = ""  # where its migrations stand ("N/A" without a database)
    migrations_pending: bool = False
    blocked: str = ""
    warnings: list[str] = []
    verify: str = ""  # --verify: what the checks said
    verify_failed: bool = False
    revision: str | None = None
    previous: list[str] = []
    url: str | None = None
    reason: str = ""
    hint: str = ""  # the next step for a failed service, when its error named one
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

    @property
    def failed(self) -> bool:
        return any(s.status in ("failed", "skipped") or s.verify_failed for s in self.services)

    @property
    def ok(self) -> bool:
        """The run (or the plan) succeeded: "changes pending" under --detailed-exitcode is a success."""
        return not self.failed and (self.status is None or self.status.ok)

    def exit_code(self) -> ExitCode:
        if self.failed:
            return ExitCode.FAILED
        if self.dry_run and self.detailed_exitcode and self.changes_pending:
            return ExitCode(2)
        if self.status is not None and self.status.exit_code() != ExitCode.OK:
            return self.status.exit_code()  # the final matrix: degraded (3), or a row that could not be read (1)
        return ExitCode.OK

    def errors(self) -> list[dict]:
        out = []
        for s in self.services:
            if s.status == "failed":
                out.append({"code": "deploy-blocked" if s.blocked else "deploy-failed",
                            "message": f"{s.service}: {s.reason}",
                            "hint": f"change the config or pass --force (`deployctl status {s.service}` shows "
                                    "what serves)" if s.blocked else
                                    s.hint or "fix the cause above and run `deployctl deploy` again"})
            elif s.status == "skipped":
                out.append({"code": "deploy-skipped", "message": f"{s.service}: {s.reason}",
                            "hint": f"deploy {s.service}'s dependencies first"})
            elif s.verify_failed:
                out.append({"code": "verify-failed", "message": f"{s.service}: {s.verify}",
                            "hint": "see the failed step above; `deployctl verify` runs the checks again"})
        if self.status is not None:
            out += self.status.errors()
        return out

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
            for warning in s.warnings:
                blocks.append(views.Line(f"{s.service}: warning: {warning}", "warn"))
            if s.verify:
                blocks.append(views.Line(f"{s.service}: verify: {s.verify}", "fail" if s.verify_failed else "ok"))
            if s.failed_probe:
                blocks.append(views.Line(f"{s.service}: failed probe: {s.failed_probe}", "fail"))
            if s.status == "failed" and s.hint:
                blocks.append(views.Line(f"{s.service}: next: {s.hint}", "fail"))
            if s.logs:
                blocks.append(views.Line(f"{s.service}: last log lines of {s.revision}:", "fail"))
                blocks.append(views.Line("\n".join("  " + line for line in s.logs), "dim"))
        if self.status is not None:
            blocks += self.status.view(next_steps=False)
        return blocks


def _verify_hook(verify: bool):
    if not verify:
        return None
    from deployctl.verify.deploy_hook import verify_wave

    return verify_wave


def _plan_tree(s: ServiceOutcome) -> views.Tree:
    if s.status == "failed" and not s.blocked:
        return views.Tree(views.Node(views.fail(f"{s.service}: cannot plan: {s.reason}")))
    label = {"create": "create", "update": "update", "unchanged": "unchanged"}.get(s.action or "", s.status)
    if s.action == "update":
        label += ": new revision" if s.new_revision else f": traffic → {s.target}" if s.target else ""
    head = f"{s.service}: {label}" + (f" ({s.plan_reason})" if s.plan_reason else "")
    children = [views.Node(f"{c.field}: {_show(c.before)} → {_show(c.after)}") for c in s.changes]
    if s.plan_migrations and s.plan_migrations != "N/A":
        children.append(views.Node(views.Cell(f"migrations: {s.plan_migrations}",
                                              "warn" if s.migrations_pending else "dim")))
    children += [views.Node(views.warn(f"warning: {w}")) for w in s.warnings]
    if s.blocked:
        children.append(views.Node(views.fail(f"refused: {s.blocked}")))
    style = "fail" if s.blocked else "warn" if s.action != "unchanged" else "dim"
    return views.Tree(views.Node(views.Cell(head, style), children))


def _show(value: object) -> str:
    return "(none)" if value is None or value == [] else repr(value) if isinstance(value, str) else str(value)


def deploy(ctx: Context, services: list[str] | None = None, all_: bool = False, dry_run: bool = False,
           migrate: bool = True, detailed_exitcode: bool = False, successes: int = 3,
           gate_deadline: float = 60.0, show_status: bool = True, verify: bool = False,
           images: list[str] | None = None, force: bool = False) -> DeployResult:
    from deployctl.deploy.rollout import Options
    from deployctl.deploy.schedule import deploy_all

    if not services and not all_:
        raise UsageError("name the services to deploy, or pass --all",
                         hint=f"services: {', '.join(ctx.config.services) or 'none'}")
    names_or_all("deploy", services, all_)
    if detailed_exitcode and not dry_run:
        raise UsageError("--detailed-exitcode goes with --dry-run", hint="add --dry-run")
    names = ctx.config.select(services, all_)
    if images:  # the whole run (desired services, migration jobs, status) sees the overridden images
        _check_images(images, names, list(ctx.config.services))
        ctx.config = ctx.config.with_images(images)
    outcomes = deploy_all(ctx, names, Options(dry_run=dry_run, migrate=migrate, successes=successes,
                                              gate_deadline=gate_deadline, force=force,
                                              verify=_verify_hook(verify)))
    rows = [_row(o) for o in outcomes]
    pending = any(o.plan is not None and o.plan.pending for o in outcomes)
    status = None
    if not dry_run and show_status:
        from deployctl.commands.status import status as status_of

        status = status_of(ctx, [o.service for o in outcomes])  # with the dependencies the run included
    return DeployResult(dry_run=dry_run, detailed_exitcode=detailed_exitcode, changes_pending=pending,
                        services=rows, status=status)


def _row(o) -> ServiceOutcome:
    p = o.plan
    return ServiceOutcome(
        service=o.service, status=o.status, action=p.action if p else None,
        changes=[FieldChange(field=c.field, before=c.before, after=c.after) for c in (p.changes if p else [])],
        plan_reason=p.reason if p else "", new_revision=p.new_revision if p else False,
        target=p.target if p else None, plan_migrations=p.migrations if p else "",
        migrations_pending=p.migrate if p else False, blocked=p.blocked if p else "", revision=o.revision,
        previous=o.previous, url=o.url, reason=o.reason, hint=o.hint, migrations=o.migrations, failed_probe=o.failed_probe,
        logs=o.logs, warnings=o.warnings, verify=o.verify, verify_failed=o.verify_failed)


def _check_images(images: list[str], names: list[str], known: list[str]) -> None:
    """--image for a service this run does not deploy, or twice for one, is a mistake: never silently ignored."""
    seen: set[str] = set()
    for item in images:
        name = item.partition("=")[0]
        if name in seen:
            raise UsageError(f"--image names {name} twice", hint="give one --image per service")
        seen.add(name)
        if name in known and name not in names:  # an unknown name: with_images says "no service"
            raise UsageError(f"--image {name}=... is for a service this deploy does not include",
                             hint=f"add {name} to the services to deploy (or use --all), or drop that --image")
