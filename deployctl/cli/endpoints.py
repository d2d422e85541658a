"""`deployctl endpoints lint|render`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from deployctl.cli.common import execute

app = typer.Typer(help="OpenAPI specs for Cloud Endpoints (ESPv2) and API Gateway: lint, render backends.",
                  no_args_is_help=True)


class Target(StrEnum):
    endpoints = "endpoints"
    api_gateway = "api-gateway"


@app.command("lint")
def lint(ctx: typer.Context, spec: Path = typer.Argument(..., help="The OpenAPI spec (YAML or JSON)."),
         target: Target = typer.Option(Target.endpoints, "--target",
                                       help="endpoints: Cloud Endpoints/ESPv2; api-gateway: API Gateway. Both "
                                            "take Swagger 2.0, and OpenAPI 3.0/3.1 with x-google-api-management "
                                            "backends (Endpoints also a server with x-google-endpoint)."),
         config_id: str = typer.Option(None, "--config-id",
                                       help="API Gateway config id to check (default: a slug of info.title, "
                                            "noted only).")) -> None:
    """Validate a spec: the OpenAPI schema, then what the target accepts. Exit 1 on errors, 3 on warnings only."""
    execute(ctx, "endpoints:lint", spec, target.value, config_id, schema="endpoints/lint")


@app.command("render")
def render(ctx: typer.Context, spec: Path = typer.Argument(..., help="The OpenAPI spec (YAML or JSON)."),
           output: Path = typer.Option(None, "--output", "-o", dir_okay=False,
                                       help="Write the rendered spec here (default: stdout).")) -> None:
    """Fill every `${service}` backend address with the service's deployed Cloud Run URL, and `${project}` in the
    Endpoints service name with the environment's project."""
    execute(ctx, "endpoints:render", spec, output, schema="endpoints/render")
