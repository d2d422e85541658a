"""`deployctl config ...`"""

from __future__ import annotations

import typer

from deployctl.cli.common import execute

app = typer.Typer(help="Check and show the environment's configuration.", no_args_is_help=True)


@app.command("validate")
def validate(ctx: typer.Context) -> None:
    """Load configs/<env>.toml and report every problem with its field."""
    execute(ctx, "config:validate", schema="config/validate")


@app.command("show")
def show(ctx: typer.Context) -> None:
    """Print the resolved configuration (secrets are references, never values)."""
    execute(ctx, "config:show", schema="config/show")
