"""`deployctl endpoints lint|render`: an OpenAPI spec for Cloud Endpoints (ESPv2) or API Gateway."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from deployctl import views
from deployctl.context import Context
from deployctl.endpoints import convert, rules
from deployctl.endpoints.findings import Finding
from deployctl.endpoints.load import load_spec
from deployctl.errors import DeployctlError, ExitCode, UsageError
from deployctl.results import Result

SEVERITY_STYLE = {"error": "fail", "warning": "warn", "info": "dim"}


class Conversion(BaseModel):
    target: str
    steps: list[str]


class LintResult(Result):
    schema_name: ClassVar[str] = "endpoints/lint"
    spec: str
    target: str
    version: str
    config_id: str
    config_id_source: str  # "--config-id" or "info.title"
    findings: list[Finding]
    conversion: Conversion
    counts: dict[str, int]

    def exit_code(self) -> ExitCode:
        if self.counts.get("error"):
            return ExitCode.FAILED
        return ExitCode.DEGRADED if self.counts.get("warning") else ExitCode.OK

    def errors(self) -> list[dict]:
        return [{"code": f.rule, "message": f"{f.path}: {f.message}", "hint": f.fix}
                for f in self.findings if f.severity == "error"]

    def view(self) -> list[views.Block]:
        blocks: list[views.Block] = [views.Fields([
            ("target", self.target), ("version", self.version or "?"),
            ("config id", f"{self.config_id or '(none)'} (from {self.config_id_source})")], title=self.spec)]
        if self.findings:
            blocks.append(views.Table(["", "where", "rule", "problem", "fix"], [
                [views.Cell(f.severity, SEVERITY_STYLE[f.severity]),
                 f"{f.path}" + (f" (line {f.line})" if f.line else ""), f.rule, f.message, f.fix]
                for f in self.findings]))
        blocks.append(views.Tree(views.Node(views.Cell(f"to deploy on {self.conversion.target} instead:", "bold"),
                                            [views.Node(s) for s in self.conversion.steps])))
        e, w = self.counts.get("error", 0), self.counts.get("warning", 0)
        summary = f"{e} error{'s' * (e != 1)}, {w} warning{'s' * (w != 1)} for {self.target}"
        blocks.append(views.Line(summary, "fail" if e else "warn" if w else "ok"))
        return blocks


class FilledAddress(BaseModel):
    path: str
    service: str
    url: str
    line: int | None


class RenderResult(Result):
    schema_name: ClassVar[str] = "endpoints/render"
    spec: str
    output: str | None
    filled: list[FilledAddress]
    text: str | None  # the rendered spec when it went to stdout
    warnings: list[str] = []

    def view(self) -> list[views.Block]:
        if self.output is None:
            return [views.Code(self.text or "")]  # stdout carries only the spec, so it can be piped
        n = len(self.filled)
        return [views.Line(f"wrote {self.output}: {n} backend address{'es' * (n != 1)} filled", "ok")]


def lint(ctx: Context, spec_path: Path, target: str = "endpoints", config_id: str | None = None) -> LintResult:
    if target not in rules.TARGETS:
        raise UsageError(f"unknown target {target!r}", hint=f"use one of: {', '.join(rules.TARGETS)}")
    spec = load_spec(spec_path)
    report = rules.lint(spec, target, config_id, services=_configured_services(ctx))
    return LintResult(
        spec=str(spec_path), target=target, version=report.version, config_id=report.config_id,
        config_id_source=report.config_id_source, findings=report.findings,
        conversion=Conversion(target=convert.other_target(target),
                              steps=convert.steps(spec, target, report.config_id)),
        counts={s: report.count(s) for s in ("error", "warning", "info")})


def _configured_services(ctx: Context) -> list[str] | None:
    """The environment's [services.*], or None when there is no configuration to check against (lint also
    runs on specs of other projects, with no config at all)."""
    try:
        return list(ctx.config.services)
    except DeployctlError:
        return None


def deployed_urls(ctx: Context) -> dict[str, str]:
    """service id -> URL of every Cloud Run service of the environment that serves (has a ready revision)."""
    from deployctl.cloud.run import RunServices

    run = RunServices(ctx.clients, ctx.project, ctx.region)
    return {s.id: s.uri for s in run.list() if s.uri and (s.ready or s.serving)}


def render(ctx: Context, spec_path: Path, output: Path | None = None,
           urls: dict[str, str] | None = None) -> RenderResult:
    """The spec with every `${service}` backend address filled; `urls` replaces the Cloud Run lookup (tests)."""
    from deployctl.endpoints import render as render_mod

    spec = load_spec(spec_path)
    needed = render_mod.services(spec)
    if not needed:
        ctx.progress("", f"{spec_path}: no ${{service}} backend addresses to fill", "warn")
    configured = _configured_services(ctx)
    if urls is None:
        unknown = [n for n in needed if configured is not None and n not in configured]
        urls = deployed_urls(ctx) if needed and not unknown else {}
    project = ctx.project if configured is not None else None
    text, filled = render_mod.render(spec, urls, env=ctx.env, project=project, configured=configured)
    for f in filled:
        ctx.progress(f.service, f"{f.path} -> {f.url}", "ok", detail=True)
    warnings = render_mod.other_projects(spec, project) if project else []
    for w in warnings:  # the story's failure: a spec deployed as another project's Endpoints service
        ctx.progress("", f"{w}; write `${{project}}` there to have render fill it", "warn")
    if output is not None:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as e:
            raise DeployctlError(f"cannot write {output}: {e.strerror}",
                                 hint="check the directory exists and is writable", code="write-failed") from None
    return RenderResult(spec=str(spec_path), output=str(output) if output is not None else None,
                        filled=[FilledAddress(path=f.path, service=f.service, url=f.url, line=f.line)
                                for f in filled],
                        text=None if output is not None else text, warnings=warnings)
