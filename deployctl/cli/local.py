"""`deployctl local ...` and `deployctl emulator serve`."""

from __future__ import annotations

from pathlib import Path

import typer

from deployctl.cli.common import execute, state

app = typer.Typer(help="The local cloud: emulator + real PostgreSQL on this machine.", no_args_is_help=True)
emulator_app = typer.Typer(help="The local cloud's server, for CI and for other tools.", no_args_is_help=True)


@app.command("up")
def up(ctx: typer.Context) -> None:
    """Start the local cloud and provision what configs/local.toml declares (idempotent)."""
    execute(ctx, "local:up", schema="local/up")


@app.command("down")
def down(ctx: typer.Context,
         purge: bool = typer.Option(False, "--purge", help="Also delete its state and databases.")) -> None:
    """Stop the local cloud and every process it started."""
    execute(ctx, "local:down", purge, schema="local/down")


@app.command("ps")
def ps(ctx: typer.Context) -> None:
    """What the local cloud runs: instances, services, revisions."""
    execute(ctx, "local:ps", schema="local/ps")


@emulator_app.command("serve")
def serve(ctx: typer.Context,
          port: int = typer.Option(0, "--port", help="gRPC port (0: any free port; printed on start)."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (keep it loopback)."),
          state_dir: Path = typer.Option(None, "--state-dir", help="Default: the environment's state dir.")) -> None:
    """Run the local cloud in the foreground until Ctrl-C. Point clients at it with DEPLOYCTL_EMULATOR_HOST."""
    st = state(ctx)

    def ready(grpc: str, rest: str) -> None:
        st.renderer.note(f"local cloud serving: DEPLOYCTL_EMULATOR_HOST={grpc} DEPLOYCTL_SQLADMIN_ENDPOINT={rest}",
                         "ok")

    execute(ctx, "local:serve", host, port, state_dir, ready, schema="emulator/serve")
