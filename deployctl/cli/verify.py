"""`deployctl verify`."""

from __future__ import annotations

from pathlib import Path

import typer

from deployctl.cli import common
from deployctl.cli.common import execute


def verify(ctx: typer.Context,
           services: list[str] = typer.Argument(None, help="Run the checks that touch these services (or --all)."),
           all_: bool = typer.Option(False, "--all", help="Every check in the config."),
           junit_xml: Path = typer.Option(None, "--junit-xml", help="Also write a JUnit XML report here (for CI)."),
           deadline: float = typer.Option(60.0, "--deadline", min=0.5, callback=common.finite,
                                          help="Seconds the whole run may take; each step also has its own.")) -> None:
    """Run the smoke checks declared in configs/<env>.toml (its checks list) against the deployed services."""
    execute(ctx, "verify:verify", services or None, all_, junit_xml, deadline, schema="verify")
