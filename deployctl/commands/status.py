"""`deployctl status [--watch]`: the per-service matrix of DESIGN §9 (revision and traffic, Ready, migrations,
health with latency, URL)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from deployctl import views
from deployctl.context import Context
from deployctl.errors import ExitCode
from deployctl.results import Result

SLOW_MS = 1000.0


class Traffic(BaseModel):
    revision: str
    percent: int
    tag: str = ""


class Migrations(BaseModel):
    state: str  # n/a | at-head | pending | unknown
    current: list[str]
    heads: list[str]
    pending: list[str]
    reason: str = ""
    summary: str


class Health(BaseModel):
    path: str
    ok: bool
    status: int | None
    latency_ms: float | None
    error: str | None = None


class ServiceRow(BaseModel):
    service: str
    deployed: bool
    error: str | None = None  # the service could not be read (and why)
    error_code: str | None = None
    error_hint: str | None = None
    url: str | None = None
    serving: str | None = None  # the revision with the most traffic
    latest_created: str | None = None
    latest_ready: str | None = None
    pinned: bool = False
    traffic: list[Traffic] = []
    ready: bool = False
    ready_message: str = ""
    migrations: Migrations
    health: list[Health] = []
    healthy: bool = False


class StatusResult(Result):
    schema_name: ClassVar[str] = "status"
    env: str
    services: list[ServiceRow]

    def exit_code(self) -> ExitCode:
        if any(s.error for s in self.services):  # a row that could not be read is a failure, not a warning
            return ExitCode.FAILED
        bad = any(not s.healthy or s.migrations.state in ("pending", "unknown") for s in self.services)
        return ExitCode.DEGRADED if bad else ExitCode.OK

    def errors(self) -> list[dict]:
        return [{"code": s.error_code or "status-unreadable", "message": f"{s.service}: {s.error}",
                 "hint": s.error_hint or f"check access to service {s.service}, then run `deployctl status` again"}
                for s in self.services if s.error]

    def view(self, next_steps: bool = True) -> list[views.Block]:
        """`next_steps`: say below the matrix what deploys or migrates what it shows missing (deploy's own final
        matrix leaves that to deploy's report)."""
        table = views.Table(["service", "revision (serving / latest)", "ready", "migrations", "health", "url"],
                            [_row(s) for s in self.services], title=f"status ({self.env})")
        # A row that could not be read says so in the matrix; the whole message and its next step go below
        # it, where a long sentence is not folded into a table cell.
        below: list[views.Block] = []
        for err in self.errors():
            below += [views.Line(f"error: {err['message']}", "fail"), views.Line(f"  next: {err['hint']}")]
        return [table, *below, *(self._next_steps() if next_steps else [])]

    def _next_steps(self) -> list[views.Block]:
        """A fresh local cloud shows 'not deployed' rows and exits 3: say which command goes on from there."""
        readable = [s for s in self.services if not s.error]
        undeployed = [s.service for s in readable if not s.deployed]
        pending = [s.service for s in readable if s.deployed and s.migrations.state == "pending"]
        notes: list[views.Block] = []
        if undeployed:  # deploy migrates first
            notes.append(views.Note(f"next: deployctl deploy {' '.join(undeployed)} (not deployed yet)", "dim"))
        if pending:
            notes.append(views.Note(f"next: deployctl migrate {' '.join(pending)} (migrations pending)", "dim"))
        return notes


def _row(s: ServiceRow) -> list[views.CellLike]:
    if not s.deployed:
        what = views.fail(f"error: {s.error_code or 'unreadable'} (below)") if s.error else views.warn("not deployed")
        return [s.service, what, "-", _migrations(s.migrations), "-", "-"]
    rev = s.serving or "none"
    if s.latest_created and s.latest_created != s.serving:
        rev += f" / {s.latest_created}"
    if s.pinned:
        rev += " (" + ", ".join(f"{t.revision} {t.percent}%" + (f" #{t.tag}" if t.tag else "")
                                for t in s.traffic) + ")"
    ready = views.ok("Ready") if s.ready else views.fail(f"not ready: {s.ready_message}"[:80])
    return [s.service, rev, ready, _migrations(s.migrations), _health(s.health), s.url or "-"]


def _migrations(m: Migrations) -> views.Cell:
    style = {"n/a": "dim", "at-head": "ok", "pending": "warn", "unknown": "warn"}[m.state]
    return views.Cell(m.summary, style)


def _health(items: list[Health]) -> views.Cell:
    if not items:
        return views.dim("no health paths")
    parts = []
    for h in items:
        if h.status is None:
            parts.append(f"{h.path} {h.error}")
        else:
            parts.append(f"{h.path} {h.status} {h.latency_ms:.0f}ms")
    bad = any(not h.ok for h in items)
    slow = any((h.latency_ms or 0) > SLOW_MS for h in items)
    return views.Cell(", ".join(parts), "fail" if bad else "warn" if slow else "ok")


def to_rows(statuses) -> list[ServiceRow]:
    rows = []
    for st in statuses:
        m = st.migrations
        main = max(st.serving, key=lambda t: t[1], default=None)
        rows.append(ServiceRow(
            service=st.service, deployed=st.deployed, error=st.error, error_code=st.error_code,
            error_hint=st.error_hint, url=st.url,
            serving=main[0] if main and main[1] else None, latest_created=st.latest_created,
            latest_ready=st.latest_ready, pinned=st.pinned,
            traffic=[Traffic(revision=r, percent=p, tag=t) for r, p, t in st.serving], ready=st.ready,
            ready_message=st.ready_message,
            migrations=Migrations(state=m.state, current=m.current, heads=m.heads, pending=m.pending,
                                  reason=m.reason, summary=m.describe()),
            health=[Health(path=h.path, ok=h.ok, status=h.status, latency_ms=h.latency_ms, error=h.error)
                    for h in st.health],
            healthy=st.healthy))
    return rows


def status(ctx: Context, services: list[str] | None = None) -> StatusResult:
    from deployctl.deploy.status import collect

    names = ctx.config.select(services)
    return StatusResult(env=ctx.env, services=to_rows(collect(ctx, names)))

