"""`deployctl verify [SERVICE...] [--all] [--junit-xml PATH]`: run the smoke checks declared in the
environment's config against the deployed services; exit 1 when any step fails."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from deployctl import views
from deployctl.commands import names_or_all
from deployctl.context import Context
from deployctl.errors import ExitCode, UsageError
from deployctl.results import Result

STYLE = {"passed": "ok", "failed": "fail", "error": "fail", "skipped": "skip"}


class StepRow(BaseModel):
    check: str
    step: str
    service: str
    method: str
    path: str
    outcome: str  # passed | failed | error | skipped
    elapsed: float
    failures: list[str] = []
    request: list[str] = []
    status: int | None = None
    body: list[str] = []


class VerifyResult(Result):
    schema_name: ClassVar[str] = "verify"
    environment: str
    services: list[str]
    checks: list[str]
    passed: int
    failed: int
    steps: list[StepRow]
    junit_xml: str | None = None

    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.failed else ExitCode.OK

    def errors(self) -> list[dict]:
        return [{"code": f"verify-{s.outcome}", "message": f"{s.check}/{s.step} ({s.service}): "
                 f"{s.failures[0] if s.failures else s.outcome}",
                 "hint": f"see the request and answer above; `deployctl status {s.service}` shows its revision"}
                for s in self.steps if s.outcome in ("failed", "error")]

    def view(self) -> list[views.Block]:
        rows = [[s.check, s.step, s.service, views.Cell(s.outcome, STYLE.get(s.outcome, "")),
                 "-" if s.status is None else str(s.status), f"{s.elapsed * 1000:.0f} ms",
                 s.failures[0] if s.failures and s.outcome != "passed" else ""] for s in self.steps]
        blocks: list[views.Block] = [views.Table(["check", "step", "service", "result", "HTTP", "time", "detail"],
                                                 rows, title=f"verify ({self.environment})")]
        for s in self.steps:
            if s.outcome not in ("failed", "error"):
                continue
            children = [views.Node(views.fail(f)) for f in s.failures]
            if s.request:
                children.append(views.Node("request", [views.Node(line) for line in s.request]))
            if s.status is not None:
                children.append(views.Node(f"response: HTTP {s.status}",
                                           [views.Node(views.dim(line)) for line in s.body]))
            blocks.append(views.Tree(views.Node(views.fail(f"{s.check}/{s.step} ({s.service})"), children)))
        summary = f"{self.passed} of {len(self.steps)} step(s) passed"
        if self.junit_xml:
            summary += f"; JUnit report: {self.junit_xml}"
        blocks.append(views.Line(summary, "fail" if self.failed else "ok"))
        return blocks


def verify(ctx: Context, services: list[str] | None = None, all_: bool = False, junit_xml: Path | None = None,
           deadline: float = 60.0) -> VerifyResult:
    from deployctl.verify import junit, suite

    if not services and not all_:
        raise UsageError("name the services to verify, or pass --all",
                         hint=f"services: {', '.join(ctx.config.services) or 'none'}")
    names_or_all("verify", services, all_)
    names = ctx.config.select(services, all_)
    checks = suite.select(ctx.config, None if all_ else names)
    if not checks:
        where = ctx.config.path or ctx.config.name
        raise UsageError(f"no checks in {where} touch {', '.join(names)}",
                         hint="declare them under [[checks]] (configs/local.toml shows the shape)")
    reports = suite.run_checks(ctx, checks, deadline=deadline, on_step=suite.progress(ctx))
    written = junit.write(junit_xml, reports, environment=ctx.env) if junit_xml else None
    rows = [StepRow(check=r.check, step=r.step, service=r.service, method=r.method, path=r.path,
                    outcome=r.outcome, elapsed=r.elapsed, failures=r.failures, request=r.request,
                    status=r.status, body=r.body) for r in reports]
    return VerifyResult(environment=ctx.env, services=names, checks=[c.name for c in checks],
                        passed=sum(r.ok for r in reports), failed=sum(r.outcome in ("failed", "error")
                                                                        for r in reports),
                        steps=rows, junit_xml=str(written) if written else None)
