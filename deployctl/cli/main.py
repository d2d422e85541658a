"""`deployctl`: the root Typer app, its global options, and the process entry point."""

from __future__ import annotations

import os
import re
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


def _nonempty_env(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise typer.BadParameter("must not be empty (leave it out for the local cloud)")
    return value


_json_run = False  # set while main() runs a --json command line: --version is eager, before root() sees --json


def _version(value: bool) -> None:
    if value:
        if _json_run:
            from deployctl.render import Renderer
            from deployctl.results import Version

            Renderer(json_mode=True).result(Version(version=__version__))
        else:
            typer.echo(f"deployctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    env: str = typer.Option(None, "--env", "-e", envvar="DEPLOYCTL_ENV", callback=_nonempty_env,
                            help="Environment: configs/<env>.toml. Default: local (the local cloud)."),
    config_dir: Path = typer.Option(None, "--config-dir", envvar="DEPLOYCTL_CONFIG_DIR",
                                    help="Directory holding <env>.toml files. Default: ./configs."),
    json_mode: bool = typer.Option(False, "--json", help="Print only the JSON result envelope on stdout."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More detail (-vv: debug)."),
    no_color: bool = typer.Option(False, "--no-color", help="No colours (also: NO_COLOR=1)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm every step that asks (needed in CI)."),
    timeout: float = typer.Option(None, "--timeout", min=0.1, callback=common.finite,
                                  help="Deadline in seconds for each cloud call, retries included."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    ctx.obj = common.make_state(env=env, config_dir=config_dir, json_mode=json_mode, verbose=verbose,
                                no_color=no_color, yes=yes, timeout=timeout)


def main(argv: list[str] | None = None) -> None:
    """The console script. Click maps usage errors to exit 2 (with --json, as an error envelope on stdout);
    commands map their own errors (cli/common.run) and exit with the result's code."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    command = typer.main.get_command(app)
    args, path = hoist_global_options(command, list(sys.argv[1:] if argv is None else argv))
    try:
        if not _wants_json(args):
            command.main(args=args, prog_name="deployctl")  # standalone: Typer prints usage errors itself
            return
        code = _main_json(command, args, path)
    except KeyboardInterrupt:  # outside a command (while parsing); inside one, run() reports it
        sys.stderr.write("interrupted\n")
        code = ExitCode.INTERRUPTED
    sys.exit(int(code))


def _wants_json(args: list[str]) -> bool:
    return "--json" in args[: args.index("--")] if "--" in args else "--json" in args


# Typer ships its own copy of Click; its exception base is found through a public class, whichever Click it is.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _usage_envelope(message: str, where: str) -> None:
    from deployctl.errors import UsageError
    from deployctl.render import Renderer

    Renderer(json_mode=True).error(UsageError(message, hint=f"see {where} --help"))


def _main_json(command, args: list[str], path: list) -> int:
    """Run with Click's errors raised to us, so a usage error still gives the JSON envelope, alone on stdout."""
    global _json_run
    group = path[-1]
    # the root's --version (hoisted to the front), unless the group on the path has a --version of its own
    root_version = "--version" in args and (group is command or "--version" not in _options(group))
    if (group is not None and getattr(group, "commands", None) and not getattr(group, "default_command", None)
            and not {"-h", "--help"} & set(args) and not root_version):
        # A group without its command: Click would print the group's help on stdout.
        where = " ".join(["deployctl", *(c.name for c in path[1:])])
        _usage_envelope(f"{where}: a command is needed", where)
        return ExitCode.USAGE
    _json_run = True
    try:
        code = command.main(args=args, prog_name="deployctl", standalone_mode=False)
    except _ClickException as e:
        ctx = getattr(e, "ctx", None)
        _usage_envelope(e.format_message(), ctx.command_path if ctx else "deployctl")
        return e.exit_code
    except typer.Abort:
        sys.stderr.write("Aborted!\n")
        return ExitCode.FAILED
    finally:
        _json_run = False
    return code if isinstance(code, int) else ExitCode.OK


def _options(command) -> dict:
    return {name: p for p in command.params if p.param_type_name == "option" for name in p.opts + p.secondary_opts}


def hoist_global_options(root, args: list[str]) -> tuple[list[str], list]:
    """Move global options written after the command (`deployctl status --json`, `deploy --all --yes`) to
    the front, where Click expects them. Only options that the command (and the groups on its way) do not
    define themselves are moved (`secrets get --version 3` keeps its own --version); values of options that
    take one stay with them; nothing after `--` moves. Returns the arguments and the command path found
    (None at its end for a name that is no command of its group)."""
    globals_ = _options(root)
    local: dict = {}
    front: list[str] = []
    rest: list[str] = []
    command = root
    path = [root]
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            rest += args[i:]
            break
        name = token.partition("=")[0]
        if command is not root and token.startswith("-") and name not in local:
            if name in globals_:
                take = 1 + _takes_value(globals_[name], token)
                front += args[i:i + take]
                i += take
                continue
            if re.fullmatch(r"-v+", token) and "-v" in globals_ and "-v" not in local:  # -vv
                front.append(token)
                i += 1
                continue
        if token.startswith("-"):
            option = (globals_ if command is root else local).get(name)
            take = 1 + (option is not None and _takes_value(option, token))
            rest += args[i:i + take]
            i += take
            continue
        if path[-1] is not None and token in getattr(command, "commands", {}):  # one step down the path
            command = command.commands[token]
            path.append(command)
            local.update(_options(command))
        elif path[-1] is not None and getattr(command, "commands", None):
            path.append(None)  # no command of this group: Click says so; the path ends here
        rest.append(token)
        i += 1
    return front + rest, path


def _takes_value(option, token: str) -> bool:
    return "=" not in token and not getattr(option, "is_flag", False) and not getattr(option, "count", False)
