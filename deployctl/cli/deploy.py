"""`deployctl deploy`, `deployctl rollback`, `deployctl status`."""

from __future__ import annotations

import time

import typer

from deployctl.cli import common
from deployctl.cli.common import execute
from deployctl.errors import ExitCode, UsageError, is_credentials_error


def deploy(ctx: typer.Context,
           services: list[str] = typer.Argument(None, help="Services to deploy (or --all)."),
           all_: bool = typer.Option(False, "--all", help="Every service in the config."),
           dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and change nothing."),
           detailed_exitcode: bool = typer.Option(
               False, "--detailed-exitcode",
               help="With --dry-run (Terraform's convention): exit 0 when there are no changes, 2 when changes "
                    "are pending, 1 when the plan failed. Usage and config errors also exit 2: with --json, a plan "
                    "with changes has \"ok\": true and data.changes_pending, a usage error \"ok\": false."),
           no_migrate: bool = typer.Option(False, "--no-migrate", help="Do not run pending migrations first."),
           images: list[str] = typer.Option(None, "--image", metavar="SERVICE=IMAGE",
                                            help="Deploy this image instead of the config's (repeatable)."),
           gate_successes: int = typer.Option(3, "--gate-successes", min=1,
                                              help="Consecutive HTTP 200s each health path must give."),
           gate_deadline: float = typer.Option(60.0, "--gate-deadline", min=0.5, callback=common.finite,
                                               help="Seconds the new revision has to pass the health gate."),
           no_status: bool = typer.Option(False, "--no-status", help="Skip the status matrix at the end."),
           verify: bool = typer.Option(False, "--verify", help="Once traffic has moved (per depends_on wave), "
                                       "run the checks of the changed services (`deployctl verify`); move a "
                                       "service whose step failed back to its previous revision."),
           force: bool = typer.Option(False, "--force", help="Move traffic to a revision that was rolled back or "
                                      "failed verify, when the plan would (refused otherwise).")) -> None:
    """Plan, migrate, roll out a new revision with no traffic, health-gate it, then shift traffic to it."""
    execute(ctx, "deploy:deploy", services or None, all_, dry_run, not no_migrate, detailed_exitcode,
            gate_successes, gate_deadline, not no_status, verify, images or None, force, schema="deploy")


def rollback(ctx: typer.Context, service: str = typer.Argument(..., help="The service."),
             to: str = typer.Option(None, "--to", help="A ready revision (default: the previous one).")) -> None:
    """Send all traffic back to the previous (or the named) ready revision."""
    execute(ctx, "rollback:rollback", service, to, schema="rollback")


def status(ctx: typer.Context, services: list[str] = typer.Argument(None, help="Services (default: all)."),
           watch: bool = typer.Option(False, "--watch", "-w",
                                      help="Refresh every few seconds until Ctrl-C (not with --json)."),
           interval: float = typer.Option(3.0, "--interval", min=0.5, callback=common.finite,
                                           help="Seconds between refreshes.")) -> None:
    """Per service: serving vs latest revision (and traffic), Ready, migrations, health with latency, URL."""
    if not watch:
        execute(ctx, "status:status", services or None, schema="status")
    st = common.state(ctx)
    if st.renderer.json_mode:  # a new envelope every interval is no JSON document a program can parse
        st.renderer.error(UsageError("--watch cannot go with --json: stdout holds one envelope",
                                     hint="run `deployctl --json status` at the interval you need"), schema="status")
        raise typer.Exit(int(ExitCode.USAGE))
    try:
        while True:
            code = common.run(st, "status:status", services or None, schema="status")
            if code == ExitCode.INTERRUPTED:
                break
            # bad usage or configuration, no credentials or ones that cannot be used: refreshing cannot mend it
            if code == ExitCode.USAGE or is_credentials_error(st.last_error):
                raise typer.Exit(int(code))
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    raise typer.Exit(0)
