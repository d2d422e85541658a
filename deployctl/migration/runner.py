"""Run a service's migrations: as the Cloud Run Job `<service>-migrate` in the VPC (default), or in-process
from here (`local`). Both end in a MigrationRun; a failed migration is a result (with its diagnosis), not an
exception, so deploy and migrate can show it beside the others.

    run = run_pending(ctx, "fiat-gateway")       # to head with the default runner; no-op when nothing pends
    run = migrate(ctx, "fiat-gateway", to="base", runner="local")    # a downgrade: asks ctx.confirm first

    p = plan(ctx, "fiat-gateway", to="-1")       # or in two steps: what it would do (p.undo: what it undoes),
    run = execute(ctx, p)                        # then do it

One login serves the status read, the local runner and the job (dbtarget.credential), so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deployctl.context import Context
from deployctl.errors import DeployctlError, UsageError
from deployctl.migration import diagnose

if TYPE_CHECKING:
    from deployctl.dbtarget import Credential
    from deployctl.migration.status import MigrationStatus
    from deployctl.migration.tree import Tree

RUNNERS = ("job", "local")
DEFAULT_RUNNER = "job"
JOB_TASK_TIMEOUT = 900  # seconds: a migration longer than this should be split (or run by hand)
JOB_LOCK_WAIT = 120.0  # seconds a job waits for another run's advisory lock
JOB_MARGIN = 60  # seconds of the task for connecting, Alembic itself and the log lines after a cancel
NETWORK = ("network-refused", "network-timeout", "network-dns", "network-reset", "network-error")


def job_timeouts(lock_wait: float | None = None) -> tuple[float, float]:
    """(lock wait, statement_timeout) for a job, nested inside its task timeout: the lock wait, one statement
    at its limit and a margin all fit, so PostgreSQL cancels a long statement (57014, logged) before Cloud Run
    kills the task (no SQLSTATE, no last line)."""
    wait = JOB_LOCK_WAIT if lock_wait is None else lock_wait
    statement = JOB_TASK_TIMEOUT - wait - JOB_MARGIN
    if statement < 30:
        raise UsageError(f"a lock wait of {wait:g} s leaves no time for the migration in a {JOB_TASK_TIMEOUT} s task",
                         hint=f"wait at most {JOB_TASK_TIMEOUT - JOB_MARGIN - 30} s for the lock")
    return wait, statement


@dataclass
class MigrationRun:
    service: str
    runner: str
    target: str
    direction: str = "upgrade"  # upgrade | downgrade
    ok: bool = True
    noop: bool = False  # nothing to apply
    from_revisions: list[str] | None = None  # None: unknown
    to_revisions: list[str] | None = None
    applied: list[str] = field(default_factory=list)  # "a -> b" per step actually applied
    execution: str | None = None  # the job execution id
    lock_waits: list[str] = field(default_factory=list)
    failing_revision: str | None = None
    sqlstate: str | None = None
    error: str | None = None  # what failed, one line
    diagnosis: str | None = None  # code (DESIGN §8)
    cause: str | None = None
    hint: str | None = None
    log_tail: list[str] = field(default_factory=list)
    credential: str | None = None  # the secret version it logged in with ("x-database-url v3")
    warning: str | None = None  # succeeded, but something needs a look (exit 3)
    heads: list[str] = field(default_factory=list)  # the tree's heads, to say "(head)"

    def describe(self) -> str:
        def revs(r):
            if r is None:
                return "unknown"
            text = ", ".join(r) or "base"
            return f"{text} (head)" if r and self.heads and sorted(r) == sorted(self.heads) else text

        if not self.ok:
            where = f" at revision {self.failing_revision}" if self.failing_revision else ""
            state = f" (SQLSTATE {self.sqlstate})" if self.sqlstate else ""
            return f"failed{where}{state}: {self.error or self.cause or 'see the log lines'}"
        if self.noop:
            return f"nothing to do: already at {revs(self.to_revisions)}"
        return f"{revs(self.from_revisions)} → {revs(self.to_revisions)} ({len(self.applied)} step(s))"


@dataclass
class MigrationPlan:
    """What a run will do, decided before it starts (the status read, the direction, what a downgrade
    undoes); `execute` carries it out."""

    tree: Tree
    to: str
    runner: str
    lock_wait: float | None
    before: MigrationStatus
    credential: Callable[[], Credential]
    direction: str
    undo: list[str] = field(default_factory=list)  # a downgrade: the revisions it removes, newest first

    @property
    def service(self) -> str:
        return self.tree.service

    def question(self) -> str:
        """The confirmation a downgrade needs (what it removes; their tables, columns and data go with it)."""
        where = "" if self.before.known else " (the database's revision could not be read: at most these)"
        undone = ", ".join(self.undo) or "nothing known"
        return (f"{self.service}: downgrade to {self.to} undoes {len(self.undo)} revision(s){where}: {undone}; "
                "the tables, columns and data they added are dropped. Continue?")


def _direction(tree: Tree, service: str, to: str, current: list[str] | None) -> str:
    if to == "base" or to.startswith("-"):
        return "downgrade"
    if to in ("head", "heads") or to.startswith("+"):
        return "upgrade"
    script = tree.script()
    try:
        script.get_revision(to)
    except Exception as e:  # noqa: BLE001 - alembic's resolution errors say what is wrong
        raise UsageError(f"{service}: unknown revision {to!r}: {e}",
                         hint="deployctl migrate status shows the revisions") from None
    if not current:
        # Unknown (or base): a revision id is an upgrade target unless the database is readable and above it.
        return "upgrade"
    below = {r.revision for head in current for r in script.iterate_revisions(head, "base")}
    return "downgrade" if to in below and to not in current else "upgrade"


def _undone(tree: Tree, to: str, current: list[str] | None) -> list[str]:
    """The revisions a downgrade to `to` removes, newest first (from the heads when current is unknown)."""
    script = tree.script()
    tops = list(current) if current is not None else list(script.get_heads())
    applied: list[str] = []
    for top in tops:
        for r in script.iterate_revisions(top, "base"):
            if r.revision not in applied:
                applied.append(r.revision)
    if to == "base":
        return applied
    if to.startswith("-"):
        try:
            return applied[:int(to[1:])]
        except ValueError:
            raise UsageError(f"{tree.service}: --to {to} is not a relative step",
                             hint="use -1, -2, ... or a revision id") from None
    kept = {r.revision for r in script.iterate_revisions(to, "base")}
    return [r for r in applied if r not in kept]


def _credential_once(ctx: Context, service: str) -> Callable[[], Credential]:
    """The service's one login, resolved (secret read, linted, instance IP asked if needed) on first use only:
    the status before, the run and the status after share it. A failure is remembered and raised again, without
    another Secret Manager read."""
    from deployctl import dbtarget

    box: dict = {}

    def get() -> Credential:
        if not box:
            try:
                box["value"] = dbtarget.credential(
                    ctx, service, on_warning=lambda message: ctx.progress(service, message, "warn"))
            except DeployctlError as e:
                box["error"] = e
        if "error" in box:
            raise box["error"]
        return box["value"]

    return get


def plan(ctx: Context, service: str, *, to: str = "head", runner: str = DEFAULT_RUNNER,
         lock_wait: float | None = None) -> MigrationPlan:
    """Read where the database stands and decide what a run to `to` does. Touches nothing."""
    from deployctl.migration.status import migration_status
    from deployctl.migration.tree import tree_for

    if runner not in RUNNERS:
        raise UsageError(f"unknown runner {runner!r}", hint="use --runner job or --runner local")
    tree = tree_for(ctx, service)
    cred = _credential_once(ctx, service)
    before = migration_status(ctx, service, credential=cred)
    return _plan(ctx, tree, to, runner, lock_wait, before, cred)


def _plan(ctx: Context, tree: Tree, to: str, runner: str, lock_wait: float | None, before,
          cred: Callable[[], Credential]) -> MigrationPlan:
    if before.current is None and to not in ("head", "heads", "base") and not to.startswith(("+", "-")) \
            and to not in tree.heads():
        # A revision id is an upgrade from below it and a downgrade from above it: unknown here.
        raise UsageError(f"{tree.service}: cannot tell whether --to {to} goes up or down: the database's revision "
                         f"could not be read from here ({before.unknown})",
                         hint="run it where the database can be read (deployctl migrate status), or use --to "
                              "head, base or -N")
    direction = _direction(tree, tree.service, to, before.current)
    undo = _undone(tree, to, before.current) if direction == "downgrade" else []
    return MigrationPlan(tree, to, runner, lock_wait, before, cred, direction, undo)


def confirm_downgrades(ctx: Context, plans: list[MigrationPlan]) -> None:
    """A downgrade drops what its revisions added: ask (or --yes) before any of them runs."""
    for p in plans:
        if p.direction == "downgrade" and p.undo and not ctx.confirm(p.question()):
            raise UsageError(f"{p.service}: not downgraded", hint="run again and confirm, or pass --yes")


def migrate(ctx: Context, service: str, *, to: str = "head", runner: str = DEFAULT_RUNNER,
            lock_wait: float | None = None) -> MigrationRun:
    """Upgrade (or downgrade, after confirmation, when `to` is behind the database) one service's database."""
    p = plan(ctx, service, to=to, runner=runner, lock_wait=lock_wait)
    confirm_downgrades(ctx, [p])
    return execute(ctx, p)


def execute(ctx: Context, p: MigrationPlan) -> MigrationRun:
    service, before = p.service, p.before
    ctx.progress(service, f"migrating to {p.to} ({p.direction}, runner {p.runner}); database at "
                          f"{before.summary()}", detail=True)
    refused = _refusal(p)
    if refused is not None:
        return refused
    try:
        cred = p.credential()
    except DeployctlError as e:  # e.g. a stored URL that dsn.lint rejects: no job is started with it
        return MigrationRun(service=service, runner=p.runner, target=p.to, direction=p.direction, ok=False,
                            error=e.message, hint=e.hint, diagnosis=e.code, cause=e.message,
                            from_revisions=before.current, heads=before.heads)
    if p.runner == "job":
        from deployctl.migration.job_runner import run_job

        result = run_job(ctx, service, p.tree, p.direction, p.to, cred, lock_wait=p.lock_wait)
    else:
        from deployctl.migration.local_runner import run_local

        result = run_local(ctx, service, p.tree, p.direction, p.to, url=cred.url)
    result.credential = cred.source
    result.heads = before.heads
    _fill_revisions(ctx, result, p)
    return result


def _refusal(p: MigrationPlan) -> MigrationRun | None:
    """A run that cannot succeed is not started: two heads for `head`, or a database unreachable from here
    for the local runner (the status read already waited for it once)."""
    before = p.before

    def refuse(error: str, hint: str, code: str) -> MigrationRun:
        return MigrationRun(service=p.service, runner=p.runner, target=p.to, direction=p.direction, ok=False,
                            error=error, cause=error, hint=hint, diagnosis=code, from_revisions=before.current,
                            heads=before.heads, credential=before.credential)

    if before.multiple_heads and p.to == "head":
        return refuse(f"not started: {before.error}; `upgrade head` needs one", before.hint or "", "multiple-heads")
    if p.runner == "local" and before.diagnosis in NETWORK:
        return refuse(f"not started: the database is not reachable from here ({before.unknown})",
                      f"run it inside the VPC: deployctl migrate {p.service} (the job runner)", before.diagnosis)
    return None


def _fill_revisions(ctx: Context, result: MigrationRun, p: MigrationPlan) -> None:
    before = p.before
    if result.from_revisions is None:
        result.from_revisions = before.current if not result.applied else _first_source(result)
    if result.to_revisions is None and result.ok and p.direction == "upgrade" and p.to == "head":
        result.to_revisions = list(before.heads)  # `upgrade head` succeeded: the database is at the head
    if result.to_revisions is None and before.known:
        from deployctl.migration.status import migration_status

        after = migration_status(ctx, result.service, credential=p.credential)
        result.to_revisions = after.current
    if result.noop is False and result.ok and not result.applied:
        result.noop = True
    if result.noop and result.to_revisions is None:
        result.to_revisions = result.from_revisions
    if result.ok and not before.known and result.runner == "job":
        # The job got in where this machine could not: worth a look, not a failure.
        result.warning = (f"could not read the revision from here: {before.unknown}; the job logged in with "
                          f"{result.credential or 'its secret'} and succeeded. If this machine cannot reach the "
                          f"database that is expected; otherwise compare the secrets: deployctl doctor {p.service}")


def _first_source(result: MigrationRun) -> list[str]:
    source = result.applied[0].split(" -> ")[0].strip()
    return [source] if source else []


def apply_reading(result: MigrationRun, reading: diagnose.Reading, *, failed: bool) -> None:
    """Fill a run from what its output said."""
    steps = reading.steps[:-1] if failed and reading.steps else reading.steps
    result.applied = [f"{s.source or 'base'} -> {s.dest or 'base'}" for s in steps]
    result.lock_waits = reading.lock_waits
    if reading.steps:
        first = reading.steps[0]
        result.from_revisions = [first.source] if first.source else []
        if failed:
            # transaction_per_migration: the failing revision rolled back whole; the ones before it stay.
            last = reading.steps[-1]
            result.to_revisions = [last.source] if last.source else []
        else:
            last = reading.steps[-1]
            result.to_revisions = [last.dest] if last.dest else []
    if not failed and reading.at is not None:
        result.to_revisions = reading.at  # the run's own last word
    if failed:
        result.ok = False
        result.failing_revision = reading.failing_revision
        result.sqlstate = reading.sqlstate
        result.error = reading.error_line


def run_pending(ctx: Context, service: str) -> MigrationRun:
    """Run a service's pending migrations to head with the default runner; a no-op (no job) when the database
    is readable from here and already at head. For deploy: a failed run has ok=False and a diagnosis."""
    from deployctl.migration.status import migration_status
    from deployctl.migration.tree import tree_for

    tree = tree_for(ctx, service)
    cred = _credential_once(ctx, service)
    st = migration_status(ctx, service, credential=cred)
    if st.known and not st.pending and not st.multiple_heads and not st.error:
        return MigrationRun(service=service, runner="none", target="head", noop=True,
                            from_revisions=st.current, to_revisions=st.current, credential=st.credential,
                            heads=st.heads)
    return execute(ctx, _plan(ctx, tree, "head", DEFAULT_RUNNER, None, st, cred))
