"""Run a service's migrations: as the Cloud Run Job `<service>-migrate` in the VPC (default), or in-process
from here (`local`). Both end in a MigrationRun; a failed migration is a result (with its diagnosis), not an
exception, so deploy and migrate can show it beside the others.

    run = run_pending(ctx, "fiat-gateway")       # to head with the default runner; no-op when nothing pends
    run = migrate(ctx, "fiat-gateway", to="base", runner="local")
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deployctl.context import Context
from deployctl.errors import UsageError
from deployctl.migration import diagnose

if TYPE_CHECKING:
    from deployctl.migration.tree import Tree

RUNNERS = ("job", "local")
DEFAULT_RUNNER = "job"
JOB_TASK_TIMEOUT = 900  # seconds: a migration longer than this should be split (or run by hand)


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

    def describe(self) -> str:
        def revs(r):
            return "unknown" if r is None else (", ".join(r) or "base")

        if not self.ok:
            where = f" at revision {self.failing_revision}" if self.failing_revision else ""
            state = f" (SQLSTATE {self.sqlstate})" if self.sqlstate else ""
            return f"failed{where}{state}: {self.error or self.cause or 'see the log lines'}"
        if self.noop:
            return f"nothing to do: already at {revs(self.to_revisions)}"
        return f"{revs(self.from_revisions)} → {revs(self.to_revisions)} ({len(self.applied)} step(s))"


def _direction(tree: Tree, service: str, to: str, current: list[str] | None) -> str:
    if to == "base" or to.startswith("-"):
        return "downgrade"
    if to in ("head", "heads") or to.startswith("+") or not current:
        return "upgrade"
    script = tree.script()
    try:
        script.get_revision(to)
    except Exception as e:  # noqa: BLE001 - alembic's resolution errors say what is wrong
        raise UsageError(f"{service}: unknown revision {to!r}: {e}",
                         hint="deployctl migrate status shows the revisions") from None
    below = {r.revision for head in current for r in script.iterate_revisions(head, "base")}
    return "downgrade" if to in below and to not in current else "upgrade"


def _url_once(ctx: Context, service: str) -> Callable[[], str]:
    """The service's DSN, resolved (password secret read, instance IP asked) on first use only: the status
    before, a local run and the status after share it."""
    from deployctl import dbtarget

    return functools.cache(lambda: dbtarget.database_url(ctx, service))


def migrate(ctx: Context, service: str, *, to: str = "head", runner: str = DEFAULT_RUNNER,
            lock_wait: float | None = None) -> MigrationRun:
    """Upgrade (or downgrade, when `to` is behind the database) one service's database to `to`."""
    from deployctl.migration.status import migration_status
    from deployctl.migration.tree import tree_for

    if runner not in RUNNERS:
        raise UsageError(f"unknown runner {runner!r}", hint="use --runner job or --runner local")
    tree = tree_for(ctx, service)
    url = _url_once(ctx, service)
    before = migration_status(ctx, service, url=url)
    return _migrate(ctx, tree, to, runner, lock_wait, before, url)


def _migrate(ctx: Context, tree: Tree, to: str, runner: str, lock_wait: float | None, before,
             url: Callable[[], str]) -> MigrationRun:
    service = tree.service
    direction = _direction(tree, service, to, before.current)
    ctx.progress(service, f"migrating to {to} ({direction}, runner {runner}); database at "
                          f"{before.summary()}", detail=True)
    if runner == "job":
        from deployctl.migration.job_runner import run_job

        result = run_job(ctx, service, tree, direction, to, lock_wait=lock_wait)
    else:
        from deployctl.migration.local_runner import run_local

        result = run_local(ctx, service, tree, direction, to, url=url())
    _fill_revisions(ctx, result, before, url)
    return result


def _fill_revisions(ctx: Context, result: MigrationRun, before, url: Callable[[], str]) -> None:
    if result.from_revisions is None:
        result.from_revisions = before.current if not result.applied else _first_source(result)
    if result.to_revisions is None and before.known:
        from deployctl.migration.status import migration_status

        after = migration_status(ctx, result.service, url=url)
        result.to_revisions = after.current
    if result.noop is False and result.ok and not result.applied:
        result.noop = True
    if result.noop and result.to_revisions is None:
        result.to_revisions = result.from_revisions


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
    url = _url_once(ctx, service)
    st = migration_status(ctx, service, url=url)
    if st.known and not st.pending and not st.multiple_heads and not st.error:
        return MigrationRun(service=service, runner="none", target="head", noop=True,
                            from_revisions=st.current, to_revisions=st.current)
    return _migrate(ctx, tree, "head", DEFAULT_RUNNER, None, st, url)
