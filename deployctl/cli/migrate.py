"""`deployctl migrate [SERVICE...]`, `deployctl migrate status`, `deployctl migrate lint`.

`deployctl migrate SERVICE...` is the same as `deployctl migrate run SERVICE...`: a Click group with a
positional SERVICE... would swallow the subcommand names, so the group inserts `run` when the first word is
not one of its commands.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from deployctl.cli.common import execute


class _RunByDefault(TyperGroup):
    default_command = "run"  # cli/main.py: a group with a default needs no command word

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_RunByDefault,
                  help="Alembic migrations: run them (as a Cloud Run Job in the VPC, or from here), see where "
                       "each database stands, lint them. `deployctl migrate SERVICE...` runs them.")


@app.command("run")
def run(ctx: typer.Context,
        services: list[str] = typer.Argument(None, help="Services to migrate."),
        all_: bool = typer.Option(False, "--all", help="Every service with a migrations tree."),
        to: str = typer.Option("head", "--to", help="Target revision: head, base, a revision id, -1, +1."),
        runner: str = typer.Option("job", "--runner",
                                   help="job: the Cloud Run Job <service>-migrate in the VPC; local: from here."),
        sql: bool = typer.Option(False, "--sql", help="Print the SQL instead of running it (no database).")
        ) -> None:
    """Upgrade (or downgrade, with --to) each service's database; on failure show the diagnosis."""
    execute(ctx, "migrate:run", services or None, all_, to, runner, sql, schema="migrate")


@app.command("status")
def status(ctx: typer.Context,
           services: list[str] = typer.Argument(None, help="Services (default: every one with migrations).")
           ) -> None:
    """Per service: current revision(s), head(s), pending revisions; multiple heads are an error."""
    execute(ctx, "migrate:status", services or None, schema="migrate/status")


@app.command("lint")
def lint(ctx: typer.Context,
         services: list[str] = typer.Argument(None, help="Services (default: every one with migrations).")
         ) -> None:
    """squawk on each revision's offline SQL, plus enum, downgrade, heads and advisory-lock checks."""
    execute(ctx, "migrate:lint", services or None, schema="migrate/lint")
