"""What every CLI command shares: the per-invocation state and the one place errors are caught."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import secrets
import stat
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from deployctl import redact
from deployctl.context import Context
from deployctl.errors import DeployctlError, ExitCode, Interrupted
from deployctl.render import Renderer

if TYPE_CHECKING:
    from deployctl.results import Result


@dataclass
class State:
    context: Context
    renderer: Renderer


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):  # a sub-app invoked on its own (tests)
        root.obj = make_state()
    return root.obj


def make_state(*, env: str | None = None, config_dir: Path | None = None, json_mode: bool = False,
               verbose: int = 0, no_color: bool = False, yes: bool = False,
               timeout: float | None = None) -> State:
    renderer = Renderer(json_mode=json_mode, verbose=verbose > 0, no_color=no_color)
    interactive = sys.stdin.isatty() and os.environ.get("CI", "").lower() not in ("true", "1")
    kwargs = {"config_dir": config_dir} if config_dir else {}
    context = Context(env=env or os.environ.get("DEPLOYCTL_ENV") or "local", verbose=verbose > 0, yes=yes,
                      interactive=interactive, timeout=timeout, on_event=renderer.event,
                      ask=(lambda q: typer.confirm(q, default=False, err=True)) if interactive else None,
                      **kwargs)
    _configure_logging(renderer, verbose)
    # Fingerprints stay comparable across commands run on one state dir (redact reads the key lazily).
    redact.use_key_file(_safe(lambda: context.state_dir / "fingerprint.key"))
    return State(context, renderer)


def _configure_logging(renderer: Renderer, verbose: int) -> None:
    logger = logging.getLogger("deployctl")
    for h in list(logger.handlers):
        if getattr(h, "_deployctl", False):
            logger.removeHandler(h)
    if verbose:
        handler = logging.StreamHandler(renderer._err_stream)
        handler.setFormatter(logging.Formatter("  %(name)s: %(message)s"))
        handler.addFilter(redact.RedactingFilter())
        handler._deployctl = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    else:
        logger.setLevel(logging.WARNING)


Command = Callable[..., "Result"] | str


def resolve(fn: Command) -> Callable[..., Result]:
    """A command given as "module:function" under deployctl.commands is imported only when it runs, so that
    `deployctl --help` loads neither pydantic models nor anything a command needs."""
    if callable(fn):
        return fn
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(f"deployctl.commands.{module}"), name)


def execute(ctx: typer.Context, fn: Command, *args, schema: str = "error", **kwargs) -> None:
    """Run a command function, render its result, and exit with its code. The one place errors are caught."""
    st = state(ctx)
    code = run(st, fn, *args, schema=schema, **kwargs)
    raise typer.Exit(int(code))


def run(st: State, fn: Command, *args, schema: str = "error", **kwargs) -> ExitCode:
    try:
        return _run(st, fn, *args, schema=schema, **kwargs)
    finally:
        _retry_summary(st)


def _run(st: State, fn: Command, *args, schema: str = "error", **kwargs) -> ExitCode:
    try:
        with st.renderer.live_progress():
            result = resolve(fn)(st.context, *args, **kwargs)
        st.renderer.result(result)
        return result.exit_code()
    except DeployctlError as e:
        st.renderer.error(e, schema=schema)
        return e.exit_code
    except KeyboardInterrupt as e:
        from deployctl import interrupt

        interrupt.request()  # any worker still running stops at its next wait
        st.renderer.error(Interrupted(interrupt.describe(e), hint="run the same command again to finish the job"),
                          schema=schema)
        return ExitCode.INTERRUPTED
    except Exception:
        path = write_crash_log(st.context)
        if st.context.verbose:
            st.renderer.note(redact.redact(traceback.format_exc()), "dim")
        st.renderer.unexpected(path)
        return ExitCode.FAILED


def _retry_summary(st: State) -> None:
    """With --verbose, the last stderr line says how many transient API errors were retried (if any)."""
    policy = sys.modules.get("deployctl.cloud.policy")  # never imported just for this
    if not st.context.verbose or policy is None:
        return
    count = policy.retries_so_far()
    if count:
        st.renderer.note(f"{count} transient error{'s' if count != 1 else ''} retried", "dim")
        st.renderer.flush()


def write_crash_log(context: Context) -> str | None:
    """The traceback of an unexpected error, redacted, in a new private log file (0600); returns its path."""
    text = redact.redact(traceback.format_exc())
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for base in (_safe(lambda: context.state_dir / "logs"), _private_temp_dir()):
        if base is None:
            continue
        try:
            base.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = base / f"crash-{stamp}-{os.getpid()}-{secrets.token_hex(3)}.log"
            # O_EXCL + O_NOFOLLOW: never write through a link someone placed under a predictable name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            return str(path)
        except OSError:
            continue
    return None


def _private_temp_dir() -> Path | None:
    """A per-user directory under the temp dir, used only when it is really ours and private."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    base = Path(tempfile.gettempdir()) / f"deployctl-logs-{uid if uid is not None else 'user'}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        st = base.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or (uid is not None and st.st_uid != uid) or st.st_mode & 0o077:
        return None
    return base


def _safe(fn):
    try:
        return fn()
    except Exception:
        return None
