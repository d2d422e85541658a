"""`deployctl doctor [SERVICE...] [--fix] [--in-vpc]`: run every check, explain each failure with its cause and
the next step; with --fix, plan the safe repairs, confirm, apply, and run the checks again."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from deployctl import views
from deployctl.context import Context
from deployctl.errors import ConfigError, ExitCode
from deployctl.results import Result

SYMBOL = {"pass": "✓", "warn": "!", "fail": "✗", "skip": "-"}
STYLE = {"pass": "ok", "warn": "warn", "fail": "fail", "skip": "skip"}
ENVIRONMENT = "environment"
DEFAULT_PROBE_TIMEOUT = 5.0  # seconds per TCP connect, login or query


class CheckOut(BaseModel):
    id: str
    title: str
    status: str
    cause: str
    evidence: list[str] = []
    next_step: str = ""
    elapsed: float = 0.0
    fixable: bool = False


class ServiceOut(BaseModel):
    service: str  # "environment" for the environment-wide checks
    status: str
    checks: list[CheckOut]


class FixOut(BaseModel):
    fix: str
    subject: str
    changes: list[str]
    why: str
    applied: bool
    result: str
    checks: list[str]
    after: dict[str, str] = {}  # check key -> status after the repair
    next_step: str = ""  # what the repair leaves to do (a redeploy, when the serving revision pins old versions)


class DoctorResult(Result):
    schema_name: ClassVar[str] = "doctor"
    environment: str
    in_vpc: bool = False
    services: list[ServiceOut]
    fixes: list[FixOut] = []
    counts: dict[str, int] = {}

    def _all(self):
        return [c for s in self.services for c in s.checks]

    def exit_code(self) -> ExitCode:
        statuses = {c.status for c in self._all()}
        if "fail" in statuses:
            return ExitCode.FAILED
        return ExitCode.DEGRADED if "warn" in statuses else ExitCode.OK

    def errors(self) -> list[dict]:
        return [{"code": f"doctor/{c.id}", "message": f"{s.service}: {c.cause}", "hint": c.next_step}
                for s in self.services for c in s.checks if c.status == "fail"]

    def view(self) -> list[views.Block]:
        blocks: list[views.Block] = []
        for s in self.services:
            root = views.Node(views.Cell(f"{SYMBOL[s.status]} {s.service}", STYLE[s.status]))
            for c in s.checks:
                label = f"{SYMBOL[c.status]} {c.id}: " + (c.cause or c.title)
                node = views.Node(views.Cell(label, STYLE[c.status]))
                if c.status in ("fail", "warn"):
                    node.children += [views.Node(views.dim(e)) for e in c.evidence]
                    if c.next_step:
                        node.children.append(views.Node(views.Cell(f"next: {c.next_step}", "bold")))
                root.children.append(node)
            blocks.append(views.Tree(root))
        for fx in self.fixes:
            style = "ok" if fx.applied and all(v == "pass" for v in fx.after.values()) else (
                "warn" if fx.applied else "dim")
            blocks.append(views.Line(f"fix {fx.fix} ({fx.subject}): {fx.result}", style))
            if fx.after:
                blocks.append(views.Line("  after: " + ", ".join(f"{k} {v}" for k, v in fx.after.items()), "dim"))
            if fx.applied and fx.next_step:
                blocks.append(views.Line(f"  next: {fx.next_step}", "bold"))
        c = self.counts
        summary = (f"{c.get('pass', 0)} passed, {c.get('warn', 0)} warnings, {c.get('fail', 0)} failed, "
                   f"{c.get('skip', 0)} skipped")
        code = self.exit_code()
        blocks.append(views.Line(summary, "fail" if code == ExitCode.FAILED else
                                 "warn" if code == ExitCode.DEGRADED else "ok"))
        return blocks


def _group(reports: dict, services: list[str]) -> list[ServiceOut]:
    groups: dict[str, list[CheckOut]] = {ENVIRONMENT: []}
    for s in services:
        groups[s] = []
    for r in reports.values():
        o = r.outcome
        groups.setdefault(r.check.service or ENVIRONMENT, []).append(CheckOut(
            id=r.check.id, title=r.check.title, status=o.status, cause=o.cause, evidence=o.evidence,
            next_step=o.next_step, elapsed=round(r.elapsed, 3), fixable=bool(o.fix)))
    # A group is not "pass" while some of its checks could not run because a check they need failed.
    unproven = {r.check.service or ENVIRONMENT for r in reports.values() if r.outcome.after_failure}
    out = []
    for name, checks in groups.items():
        statuses = {c.status for c in checks} - ({"pass"} if name in unproven else set())
        status = next((s for s in ("fail", "warn", "pass") if s in statuses), "skip")
        out.append(ServiceOut(service=name, status=status, checks=checks))
    return out


def _run(ctx: Context, services: list[str] | None, in_vpc: bool, probe_timeout: float):
    from deployctl.checks import engine, registry
    from deployctl.checks.facts import Facts

    f = Facts(ctx, probe_timeout=probe_timeout, in_vpc=in_vpc)
    try:
        chosen = ctx.config.select(services)
    except ConfigError:
        if services is not None and "config" in ctx.__dict__:
            raise  # a service name that is not in a valid config: a usage error
        return f, registry.environment_checks(30.0)[:1], [], None
    checks = registry.build(f, chosen, in_vpc=in_vpc)

    def report(r) -> None:
        ctx.progress(r.check.service or ENVIRONMENT, f"{r.check.id}: {r.outcome.cause or r.outcome.status}",
                     {"pass": "ok", "skip": "skip"}.get(r.outcome.status, r.outcome.status), detail=True)

    return f, checks, chosen, engine.run(checks, f, on_done=report)


def doctor(ctx: Context, services: list[str] | None = None, fix: bool = False, in_vpc: bool = False) -> DoctorResult:
    from deployctl.checks import engine

    probe_timeout = probe_timeout_for(ctx.timeout)
    f, checks, chosen, reports = _run(ctx, services, in_vpc, probe_timeout)
    if reports is None:  # the configuration does not load: that is the one finding
        reports = engine.run(checks, f)
    fixes: list[FixOut] = []
    if fix and reports:
        fixes = _fix(ctx, f, list(reports.values()))
        if any(x.applied for x in fixes):
            ctx.progress("", "running the checks again after the repairs")
            f, checks, chosen, reports = _run(ctx, services, in_vpc, probe_timeout)
            for x in fixes:
                x.after = {k: reports[k].outcome.status for k in x.checks if k in reports}
    counts: dict[str, int] = {}
    for r in reports.values():
        counts[r.outcome.status] = counts.get(r.outcome.status, 0) + 1
    return DoctorResult(environment=ctx.env, in_vpc=in_vpc, services=_group(reports, chosen), fixes=fixes,
                        counts=counts)


def probe_timeout_for(timeout: float | None) -> float:
    """Each TCP connect, login or query waits --timeout when given (up or down), else 5 s; the checks' own
    timeouts are derived from it (registry)."""
    return timeout or DEFAULT_PROBE_TIMEOUT


def _fix(ctx: Context, f, reports) -> list[FixOut]:
    from deployctl.checks import fixes as fixes_mod
    from deployctl.errors import DeployctlError

    out = []
    for p in fixes_mod.collect(f, reports):
        ctx.progress(p.key, f"repair {p.fix}: " + "; ".join(p.changes) + (f" (why: {p.why})" if p.why else ""),
                     "warn")
        entry = FixOut(fix=p.fix, subject=p.key, changes=p.changes, why=p.why, applied=False, result="",
                       checks=p.checks)
        out.append(entry)
        if p.apply is None:
            entry.result = "not applied: deployctl holds no login that may do it; run: " + "; ".join(p.changes)
            continue
        if not ctx.confirm(f"{p.key}: {p.fix}: " + "; ".join(p.changes) + "?"):
            entry.result = "declined"
            continue
        try:
            entry.result = p.apply()
            entry.applied = True
            ctx.progress(p.key, entry.result, "ok")
            entry.next_step = _redeploy_step(f, p)
        except DeployctlError as e:
            entry.result = f"failed: {e.message}" + (f" (next: {e.hint})" if e.hint else "")
            ctx.progress(p.key, entry.result, "fail")
        f.forget()
    return out


def _redeploy_step(f, p) -> str:
    """A new secret version reaches the service only with a new revision, since its serving revision pins
    versions: a redeploy is due when a pinned version (of a secret just written, or, after a password repair, of
    the password or url secret) carries another password than the one now in use, or is a broken string."""
    from deployctl.checks.fixes import PASSWORD_SOURCES
    from deployctl.errors import DeployctlError

    if not p.service or not (p.writes or p.fix in PASSWORD_SOURCES):
        return ""
    try:
        secrets = set(p.writes)
        if p.fix in PASSWORD_SOURCES:  # the database's password changed, or its secret did: both strings count
            t = f.target(p.service)
            secrets |= {t.password_secret} | ({t.url_secret} if t.url_secret else set())
        pinned = [f"{sid} v{v}" for sid in sorted(secrets)
                  if (v := f.pinned_version(p.service, sid)) and _pinned_differs(f, p, sid, v)]
    except DeployctlError:
        pinned = []
    if not pinned:
        return ""
    return f"deployctl deploy {p.service}: its serving revision still pins {', '.join(pinned)}"


def _pinned_differs(f, p, secret_id: str, version: str) -> bool:
    from deployctl.checks import connstring
    from deployctl.checks.facts import password_in_url

    text = f.secret(secret_id, version).data.decode("utf-8", "surrogateescape")
    if secret_id == f.target(p.service).url_secret:
        return password_in_url(text) != p.password or connstring.broken(f, p.service, text)
    return text != p.password
