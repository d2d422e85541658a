"""A service's Alembic tree: where it is, its heads and revisions, and its offline SQL (no database needed)."""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from deployctl.context import Context
from deployctl.errors import ConfigError


@contextlib.contextmanager
def quiet_alembic_logging():
    """Keep migrate_env from installing alembic.ini's console logging in this process (it does so only when
    the root logger has no handler, i.e. under the alembic CLI, inside a job)."""
    root = logging.getLogger()
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder:
        root.addHandler(placeholder)
    try:
        yield
    finally:
        if placeholder:
            root.removeHandler(placeholder)


@dataclass(frozen=True)
class Tree:
    service: str
    directory: Path  # absolute
    ini: Path  # absolute path of alembic.ini

    def config(self, output_buffer=None):
        from alembic.config import Config

        return Config(str(self.ini), output_buffer=output_buffer) if output_buffer else Config(str(self.ini))

    def script(self):
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.config())

    def heads(self) -> list[str]:
        return list(self.script().get_heads())

    def revisions(self) -> list:
        """Every revision, base first (for a branched tree: a topological order)."""
        return list(reversed(list(self.script().walk_revisions())))

    def pending(self, current: list[str], target: str = "heads") -> list[str]:
        """Revision ids between `current` and `target`, in the order an upgrade applies them. Towards the
        heads that is every revision that is neither applied nor below an applied one, so a branch that
        forked below `current` (two heads) shows as pending too."""
        script = self.script()
        if target == "heads":
            applied = {r.revision for c in current for r in script.iterate_revisions(c, "base")}
            return [r.revision for r in self.revisions() if r.revision not in applied]
        revs = script.iterate_revisions(target, tuple(current) or "base")  # newest first
        return [r.revision for r in reversed(list(revs))]

    def offline_sql(self, start: str | None, end: str, *, downgrade: bool = False) -> str:
        """`alembic upgrade start:end --sql` (or downgrade), as text. Needs no credentials (migrate_env)."""
        from alembic import command

        buf = io.StringIO()
        cfg = self.config(output_buffer=buf)
        with quiet_alembic_logging():
            if downgrade:
                command.downgrade(cfg, f"{start}:{end}", sql=True)
            else:
                command.upgrade(cfg, f"{start}:{end}" if start else end, sql=True)
        return buf.getvalue()

    def relative_ini(self, root: Path) -> str:
        """The ini path as a job in the image (cwd = project root) names it; absolute when outside the root."""
        try:
            return str(self.ini.relative_to(root.resolve()))
        except ValueError:
            return str(self.ini)


def tree_for(ctx: Context, service: str) -> Tree:
    svc = ctx.config.service(service)
    if svc.database is None:
        raise ConfigError(f"service {service!r} has no database, so no migrations",
                          hint=f"add [services.{service}.database] with migrations = \"migrations/...\"")
    if svc.database.migrations is None:
        raise ConfigError(f"service {service!r} names no migrations tree",
                          hint=f"set migrations = \"migrations/<pkg>\" in [services.{service}.database]")
    directory = ctx.config.resolve(svc.database.migrations).resolve()
    ini = directory / "alembic.ini"
    if not ini.is_file():
        raise ConfigError(f"{service}: no alembic.ini in {directory}",
                          hint=f"check services.{service}.database.migrations in {ctx.config.path}")
    return Tree(service, directory, ini)


def with_migrations(ctx: Context, names: list[str] | None) -> list[str]:
    """The named services (or all), keeping those with a database and a migrations tree."""
    chosen = ctx.config.select(names)
    if names:
        for n in chosen:
            tree_for(ctx, n)  # a named service without a tree is a usage error, said precisely
        return chosen
    return [n for n in chosen if ctx.config.services[n].database is not None
            and ctx.config.services[n].database.migrations is not None]
