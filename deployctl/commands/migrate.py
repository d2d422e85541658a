"""`deployctl migrate [SERVICE...]`, `migrate status`, `migrate lint`: thin results over deployctl.migration."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict
from typing import ClassVar

from pydantic import BaseModel

from deployctl import views
from deployctl.commands import names_or_all
from deployctl.context import Context
from deployctl.errors import ExitCode, UsageError
from deployctl.results import Result

MAX_PARALLEL = 8  # status reads of several services' databases at once


class RunOut(BaseModel):
    service: str
    runner: str
    target: str
    direction: str
    ok: bool
    noop: bool
    from_revisions: list[str] | None
    to_revisions: list[str] | None
    applied: list[str]
    execution: str | None
    lock_waits: list[str]
    failing_revision: str | None
    sqlstate: str | None
    error: str | None
    diagnosis: str | None
    cause: str | None
    hint: str | None
    log_tail: list[str]
    credential: str | None
    warning: str | None
    heads: list[str]
    summary: str


class MigrateResult(Result):
    schema_name: ClassVar[str] = "migrate"
    runs: list[RunOut] = []
    sql: dict[str, str] = {}  # --sql: service -> offline SQL

    def exit_code(self) -> ExitCode:
        if not all(r.ok for r in self.runs):
            return ExitCode.FAILED
        return ExitCode.DEGRADED if any(r.warning for r in self.runs) else ExitCode.OK

    def errors(self) -> list[dict]:
        return [{"code": f"migrate-{r.diagnosis or 'failed'}",
                 "message": f"{r.service}: {r.summary}", "hint": r.hint or ""} for r in self.runs if not r.ok]

    def view(self) -> list[views.Block]:
        if self.sql:
            return [views.Code("\n".join(f"-- {s}\n{text}" for s, text in self.sql.items()))]
        blocks: list[views.Block] = []
        for r in self.runs:
            style = "ok" if r.ok else "fail"
            items: list[tuple[str, views.CellLike]] = [
                ("result", views.Cell(r.summary, style)), ("runner", r.runner)]
            if r.credential:
                items.append(("login", r.credential))
            if r.execution:
                items.append(("execution", r.execution))
            for waited in r.lock_waits:
                items.append(("waited", views.warn(waited)))
            if r.warning:
                items.append(("warning", views.warn(r.warning)))
            if not r.ok:
                failing = r.failing_revision or ("unknown" if r.applied else "none: no migration had started")
                items += [("failing revision", failing), ("SQLSTATE", r.sqlstate or "none")]
                if r.cause and r.cause != r.error:
                    items.append(("cause", r.cause))
                items.append(("next", r.hint or ""))
            blocks.append(views.Fields(items, title=r.service))
            if r.log_tail:
                blocks.append(views.Line(f"  last log lines of {r.execution or 'the run'}:", "dim"))
                blocks += [views.Line(f"    {line}", "dim") for line in r.log_tail]
        return blocks


def _out(run) -> RunOut:
    return RunOut(**asdict(run), summary=run.describe())


def run(ctx: Context, services: list[str] | None = None, all_: bool = False, to: str = "head",
        runner: str = "job", sql: bool = False) -> MigrateResult:
    from deployctl.migration import runner as engine
    from deployctl.migration.tree import with_migrations

    if not services and not all_:
        raise UsageError("name the services to migrate, or pass --all",
                         hint="deployctl migrate fiat-gateway, or deployctl migrate --all")
    names_or_all("migrate", services, all_)
    names = with_migrations(ctx, services or None)
    if not names:
        raise UsageError("no selected service has a migrations tree",
                         hint="set migrations in [services.NAME.database]")
    if sql:
        return MigrateResult(sql={n: offline_sql(ctx, n, to) for n in names})
    ctx.config, ctx.clients  # noqa: B018 - build once, before the threads use them
    # Each read waits up to its connect timeout on an unreachable database: read them all at once.
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(names))) as pool:
        plans = list(pool.map(lambda n: engine.plan(ctx, n, to=to, runner=runner), names))
    engine.confirm_downgrades(ctx, plans)  # before anything runs, every downgrade is agreed to
    if runner == "job" and len(plans) > 1:
        return MigrateResult(runs=_concurrently(ctx, plans))
    # In-process runs share Alembic's logger (and Ctrl-C lands in this thread): one after the other.
    out: list[RunOut] = []
    for p in plans:
        try:
            result = engine.execute(ctx, p)
        except KeyboardInterrupt:
            raise _interrupted(names, out, [p.service], runner) from None
        ctx.progress(p.service, result.describe(), "ok" if result.ok else "fail")
        out.append(_out(result))
    return MigrateResult(runs=out)


def _concurrently(ctx: Context, plans) -> list[RunOut]:
    """Job runs of several services at once: different databases, different locks (deploy does the same)."""
    from deployctl.migration.runner import execute

    def one(p):
        result = execute(ctx, p)
        ctx.progress(p.service, result.describe(), "ok" if result.ok else "fail")
        return _out(result)

    names = [p.service for p in plans]
    finished: dict[str, RunOut] = {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(plans))) as pool:
        running = {pool.submit(one, p): p.service for p in plans}
        try:
            while running:
                # A timeout keeps this thread, where Ctrl-C lands, returning to Python regularly.
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    finished[running.pop(fut)] = fut.result()
        except KeyboardInterrupt:
            from deployctl import interrupt

            interrupt.request()  # each worker cancels its execution at its next wait
            wait(list(running), timeout=1.2)
            done_runs = [finished[n] for n in names if n in finished]
            raise _interrupted(names, done_runs, list(running.values()), "job") from None
    return [finished[n] for n in names]


def _interrupted(names: list[str], finished: list[RunOut], current: list[str], runner: str):
    """Ctrl-C: which services were migrated, which were cut short and how, which were not started.

    Each migration runs in its own transaction (transaction_per_migration), so the one in progress rolls back
    and the ones before it stay applied; the advisory lock ends with the session (local runner: this process's
    connection; job runner: the execution, which is cancelled). Running the command again finishes the job.
    """
    from deployctl import interrupt

    done = [f"{r.service}: {r.summary}" for r in finished]
    where = "its job execution" if runner == "job" else "alembic in this process"
    not_done = [f"{name}: interrupted in {where}; a migration in progress rolls back, the ones before it "
                "stay applied (deployctl migrate status shows where it is)" for name in current]
    seen = {r.service for r in finished} | set(current)
    not_done += [f"{n}: not started" for n in names if n not in seen]
    return interrupt.Cancelled(done, not_done)


def offline_sql(ctx: Context, service: str, to: str) -> str:
    """The SQL an upgrade (or, for base / -N / A:B ranges, a downgrade) would run; touches no database.

    Offline SQL cannot read the current revision, so -N steps down from the head(s), as its output's
    `UPDATE alembic_version ... WHERE version_num = '<head>'` shows; A:B names both ends."""
    from alembic.util import CommandError

    from deployctl.migration.tree import tree_for

    tree = tree_for(ctx, service)
    try:
        if ":" in to:
            start, _, end = to.partition(":")
            down = end == "base" or (start not in ("base", "") and end in {r.revision for r in tree.revisions()}
                                     and tree.pending([end], start) != [])
            return tree.offline_sql(start or None, end, downgrade=down)
        if to == "base":
            return tree.offline_sql("heads", "base", downgrade=True)
        if to.startswith("-"):
            if not to[1:].isdigit() or int(to[1:]) == 0:
                raise UsageError(f"{service}: --to {to} is not a relative step", hint="use -1, -2, ... or a revision id")
            return tree.offline_sql("heads", f"heads{to}", downgrade=True)
        return tree.offline_sql(None, to)
    except CommandError as e:
        raise UsageError(f"{service}: --sql --to {to}: {e}",
                         hint=f"see the revisions with deployctl migrate status {service}; offline SQL cannot "
                              "read the current revision, so name both ends with --to A:B") from None


class StatusOut(BaseModel):
    service: str
    current: list[str] | None
    heads: list[str]
    pending: list[str] | None
    multiple_heads: bool
    unknown: str | None
    sqlstate: str | None
    error: str | None
    hint: str | None
    summary: str


class MigrateStatusResult(Result):
    schema_name: ClassVar[str] = "migrate/status"
    services: list[StatusOut]

    def exit_code(self) -> ExitCode:
        if any(s.error for s in self.services):
            return ExitCode.FAILED
        if any(s.unknown for s in self.services):
            return ExitCode.DEGRADED
        return ExitCode.OK

    def errors(self) -> list[dict]:
        return [{"code": "migrate-status", "message": f"{s.service}: {s.error}", "hint": s.hint or ""}
                for s in self.services if s.error]

    def view(self) -> list[views.Block]:
        rows: list[list[views.CellLike]] = []
        for s in self.services:
            current = (views.warn(f"unknown: {s.unknown}") if s.current is None
                       else ", ".join(s.current) or "base")
            heads = ", ".join(s.heads) or "base"
            pending = ("?" if s.pending is None else ", ".join(s.pending) or "none")
            if s.error:
                state = views.fail(s.error)
            elif s.current is None:
                state = views.warn("unknown")
            elif s.pending:
                state = views.warn(f"{len(s.pending)} pending")
            else:
                state = views.ok("at head")
            rows.append([s.service, current, views.fail(heads) if s.multiple_heads else heads, pending, state])
        blocks: list[views.Block] = [views.Table(["Service", "Current", "Head(s)", "Pending", "State"], rows)]
        for s in self.services:
            if s.hint and (s.error or s.unknown):
                blocks.append(views.Line(f"  {s.service}: next: {s.hint}", "dim"))
        return blocks


def status(ctx: Context, services: list[str] | None = None) -> MigrateStatusResult:
    from deployctl.migration.status import migration_status
    from deployctl.migration.tree import with_migrations

    names = with_migrations(ctx, services or None)
    if names:
        ctx.config, ctx.clients  # noqa: B018 - build once, before the threads use them
    # Each read waits up to its connect timeout on an unreachable database: read them all at once.
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(names) or 1)) as pool:
        statuses = list(pool.map(lambda name: migration_status(ctx, name), names))
    out = []
    for name, st in zip(names, statuses, strict=True):
        out.append(StatusOut(service=name, current=st.current, heads=st.heads, pending=st.pending,
                             multiple_heads=st.multiple_heads, unknown=st.unknown, sqlstate=st.sqlstate,
                             error=st.error, hint=st.hint, summary=st.summary()))
    return MigrateStatusResult(services=out)


class FindingOut(BaseModel):
    service: str
    revision: str | None
    file: str
    line: int
    rule: str
    severity: str
    message: str
    source: str


class LintResult(Result):
    schema_name: ClassVar[str] = "migrate/lint"
    services: list[str]
    findings: list[FindingOut]

    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if any(f.severity == "error" for f in self.findings) else ExitCode.OK

    def errors(self) -> list[dict]:
        return [{"code": f"lint-{f.rule}", "message": f"{f.file}:{f.line}: {f.message}",
                 "hint": "fix the migration (see the rule's explanation)"}
                for f in self.findings if f.severity == "error"]

    def view(self) -> list[views.Block]:
        blocks: list[views.Block] = []
        for f in sorted(self.findings, key=lambda f: (f.severity != "error", f.file, f.line)):
            style = "fail" if f.severity == "error" else "warn"
            blocks.append(views.Line(f"{f.file}:{f.line}: {f.severity}: {f.rule} ({f.source}): {f.message}",
                                     style))
        errors = sum(f.severity == "error" for f in self.findings)
        warnings = len(self.findings) - errors
        blocks.append(views.Line(f"{', '.join(self.services)}: {errors} error(s), {warnings} warning(s)",
                                 "fail" if errors else "ok"))
        return blocks


def lint(ctx: Context, services: list[str] | None = None) -> LintResult:
    from deployctl.migration.lint import lint_tree
    from deployctl.migration.tree import tree_for, with_migrations

    names = with_migrations(ctx, services or None)
    findings = []
    for name in names:
        ctx.progress(name, "linting migrations", detail=True)
        findings += [FindingOut(**asdict(f)) for f in lint_tree(tree_for(ctx, name))]
    return LintResult(services=names, findings=findings)
