"""`deployctl`: the root Typer app, its global options, and the process entry point."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from deployctl import __version__
from deployctl.cli import common
from deployctl.cli import config as config_cli
from deployctl.cli import deploy as deploy_cli
from deployctl.cli import doctor as doctor_cli
from deployctl.cli import endpoints as endpoints_cli
from deployctl.cli import local as local_cli
from deployctl.cli import migrate as migrate_cli
from deployctl.cli import secrets as secrets_cli
from deployctl.cli import verify as verify_cli
from deployctl.errors import ExitCode

app = typer.Typer(
    name="deployctl",
    help="Deploy Python services to Cloud Run with their Cloud SQL databases migrated, their secrets right "
         "and their health proven. Runs against the local cloud by default (--env local).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_cli.app, name="config")
app.add_typer(local_cli.app, name="local")
app.add_typer(local_cli.emulator_app, name="emulator")
app.add_typer(secrets_cli.app, name="secrets")
app.add_typer(endpoints_cli.app, name="endpoints")
app.add_typer(migrate_cli.app, name="migrate")
app.command("dsn")(secrets_cli.dsn)
app.command("doctor")(doctor_cli.doctor)
app.command("deploy")(deploy_cli.deploy)
app.command("rollback")(deploy_cli.rollback)
app.command("status")(deploy_cli.status)
app.command("verify")(verify_cli.verify)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"deployctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    env: str = typer.Option(None, "--env", "-e", envvar="DEPLOYCTL_ENV",
                            help="Environment: configs/<env>.toml. Default: local (the local cloud)."),
    config_dir: Path = typer.Option(None, "--config-dir", envvar="DEPLOYCTL_CONFIG_DIR",
                                    help="Directory holding <env>.toml files. Default: ./configs."),
    json_mode: bool = typer.Option(False, "--json", help="Print only the JSON result envelope on stdout."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More detail (-vv: debug)."),
    no_color: bool = typer.Option(False, "--no-color", help="No colours (also: NO_COLOR=1)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm every step that asks (needed in CI)."),
    timeout: float = typer.Option(None, "--timeout", min=0.1,
                                  help="Deadline in seconds for each cloud call, retries included."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    ctx.obj = common.make_state(env=env, config_dir=config_dir, json_mode=json_mode, verbose=verbose,
                                no_color=no_color, yes=yes, timeout=timeout)


def main(argv: list[str] | None = None) -> None:
    """The console script. Click's standalone mode maps usage errors to exit 2; commands map their own errors
    (cli/common.run) and exit with the result's code."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        app(args=argv, prog_name="deployctl")
    except KeyboardInterrupt:  # outside a command (while parsing); inside one, run() reports it
        sys.stderr.write("interrupted\n")
        sys.exit(int(ExitCode.INTERRUPTED))
