"""`deployctl doctor`."""

from __future__ import annotations

import typer

from deployctl.cli.common import execute


def doctor(ctx: typer.Context,
           services: list[str] = typer.Argument(None, help="Services (default: every one)."),
           fix: bool = typer.Option(False, "--fix", help="Repair what is safe to repair, after confirmation."),
           in_vpc: bool = typer.Option(False, "--in-vpc", help="Run the database probes inside the VPC, as a "
                                                                "Cloud Run Job from the service's image.")) -> None:
    """Run every check; explain each failure with its cause and the next step. Exit 0 ok, 3 warnings, 1 failures."""
    execute(ctx, "doctor:doctor", services or None, fix, in_vpc, schema="doctor")
