"""`deployctl secrets ...` and `deployctl dsn ...`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import typer

from deployctl.cli.common import execute

# deployctl.dsn.DRIVERS, written out so that --help lists them without importing dsn
Driver = Literal["pg8000", "psycopg", "asyncpg"]

app = typer.Typer(help="Secret Manager, with values masked unless --reveal.", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every secret with its latest version, and which config entries use it (or miss it)."""
    execute(ctx, "secrets:list_secrets", schema="secrets/list")


@app.command("versions")
def versions(ctx: typer.Context, secret: str = typer.Argument(..., help="Secret id.")) -> None:
    """A secret's versions and their states."""
    execute(ctx, "secrets:versions", secret, schema="secrets/versions")


@app.command("get")
def get(ctx: typer.Context, secret: str = typer.Argument(..., help="Secret id."),
        version: str = typer.Option("latest", "--version", help="A version number or 'latest'."),
        reveal: bool = typer.Option(False, "--reveal", help="Print the value itself.")) -> None:
    """A secret's value: masked with a fingerprint, or itself with --reveal."""
    execute(ctx, "secrets:get", secret, version, reveal, schema="secrets/get")


@app.command("set")
def set_(ctx: typer.Context, secret: str = typer.Argument(..., help="Secret id (created if missing)."),
         from_file: Path = typer.Option(None, "--from-file", exists=True, dir_okay=False,
                                        help="Read the value from this file (byte for byte)."),
         strip_newline: bool = typer.Option(False, "--strip-newline",
                                            help="Drop a trailing newline (as echo or an editor adds one).")) -> None:
    """Add a version; the value comes from stdin or --from-file, never the command line (shell history)."""
    data = from_file.read_bytes() if from_file else _read_secret_input(f"value for {secret}")
    execute(ctx, "secrets:set_value", secret, data, strip_newline, schema="secrets/set")


def _read_secret_input(what: str) -> bytes:
    if sys.stdin.isatty():  # a person typing: ask, without echoing the value (and without its newline)
        import getpass

        return getpass.getpass(f"{what} (not shown): ").encode("utf-8", "surrogateescape")
    return sys.stdin.buffer.read()


def dsn(ctx: typer.Context,
        services: list[str] = typer.Argument(None, help="Services (default: every one with a database)."),
        driver: Driver = typer.Option(None, "--driver",
                                      help="The driver to build for (default: the service's, from the config)."),
        reveal: bool = typer.Option(False, "--reveal", help="Print the connection string with its password."),
        write_secret: bool = typer.Option(False, "--write-secret",
                                          help="Store it as a new version of the service's url_secret.")) -> None:
    """A service's connection string: URL-encoded, SSL on, the driver's own arguments; masked unless --reveal.

    `deployctl dsn lint [SERVICE]` checks a connection string given on stdin instead (never on the command
    line: it holds a password), against SERVICE's instance and driver when one is named."""
    if services and services[0] == "lint":
        if len(services) > 2 or driver or reveal or write_secret:
            raise typer.BadParameter("`dsn lint` takes at most one SERVICE and no options; the connection "
                                     "string comes on stdin: deployctl dsn lint [SERVICE] < url.txt")
        data = _read_secret_input("connection string")
        execute(ctx, "dsn:lint_value", data, services[1] if len(services) > 1 else None, schema="dsn/lint")
    execute(ctx, "dsn:show", services or None, driver, reveal, write_secret, schema="dsn")
