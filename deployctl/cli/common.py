"""What every CLI command shares: the per-invocation state and the one place errors are caught."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import math
import os
import secrets
import signal
import stat
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    last_error: DeployctlError | None = None  # what ended the last run(), if an error did (status --watch)


def finite(value: float | None) -> float | None:
    """The callback of every option given in seconds: `inf` passes a `min=` range check, and a deadline of inf
    never ends (a dead endpoint was retried for ever)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter("must be a finite number of seconds")
    return value


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
    if code == ExitCode.INTERRUPTED and _cli_process():
        _end_process(code, st)  # the report is out: no worker still inside a cloud call or a DB connect holds us
    raise typer.Exit(int(code))


def run(st: State, fn: Command, *args, schema: str = "error", **kwargs) -> ExitCode:
    with _ctrl_c_ends_promptly(st, schema):
        try:
            return _run(st, fn, *args, schema=schema, **kwargs)
        finally:
            _retry_summary(st)


def _run(st: State, fn: Command, *args, schema: str = "error", **kwargs) -> ExitCode:
    st.last_error = None
    try:
        with st.renderer.live_progress():
            result = resolve(fn)(st.context, *args, **kwargs)
        st.renderer.result(result)
        return result.exit_code()
    except DeployctlError as e:
        st.last_error = e
        st.renderer.error(e, schema=schema)
        return e.exit_code
    except KeyboardInterrupt as e:
        from deployctl import interrupt

        interrupt.request()  # any worker still running stops at its next wait
        if _stopping.armed:
            _stopping.reporting.acquire()  # never released: the process ends after this report (or the watchdog's)
        st.renderer.error(Interrupted(interrupt.describe(e), hint=_AGAIN), schema=schema)
        return ExitCode.INTERRUPTED
    except Exception:
        path = write_crash_log(st.context)
        if st.context.verbose:
            st.renderer.note(redact.redact(traceback.format_exc()), "dim")
        st.renderer.unexpected(path)
        return ExitCode.FAILED


_AGAIN = "run the same command again to finish the job"


class _Stopping:
    """The state of a Ctrl-C in the CLI's own process (see _ctrl_c_ends_promptly)."""

    GRACE = 3.0  # seconds from Ctrl-C to the watchdog; reporting takes 0.1-1.5 s (cancelling a job execution)

    def __init__(self) -> None:
        self.armed = False  # our SIGINT handler is installed
        self.sigints = 0
        self.reporting = threading.Lock()  # held by whoever prints the interruption


_stopping = _Stopping()


def _cli_process() -> bool:
    """This process is deployctl itself (its console script or `python -m deployctl`), not a test runner or a
    program running commands in-process: only then may an interrupt end the process at once."""
    entry = getattr(sys.modules.get("deployctl.cli.main"), "main", None)
    return entry is not None and getattr(sys.modules.get("__main__"), "main", None) is entry


@contextmanager
def _ctrl_c_ends_promptly(st: State, schema: str) -> Iterator[None]:
    """Ctrl-C stops the command within about 2 s, whatever its threads are doing.

    SIGINT still raises KeyboardInterrupt in the main thread, so the command unwinds and reports what was done and
    what was not; it also asks every worker to stop at its next wait at once (interrupt.request). After the report
    the process ends with os._exit (execute): Python would otherwise join every pool thread still inside a cloud
    attempt (up to 10 s) or a database connect before exiting. File locks are flock locks, released by the kernel;
    the local cloud's emulator runs in its own session and is meant to outlive us. If the main thread itself is
    held (joining a pool that waits for its workers), a watchdog prints the interruption and ends the process
    GRACE seconds after Ctrl-C; a second Ctrl-C ends it at once.
    """
    if (not _cli_process() or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield  # in-process (tests), or SIGINT ignored (a background job): leave SIGINT as it is
        return

    def on_sigint(signum, frame) -> None:
        from deployctl import interrupt

        _stopping.sigints += 1
        if _stopping.sigints > 1:
            _end_process(ExitCode.INTERRUPTED, st, note="interrupted again: stopping now")
        interrupt.request()
        threading.Thread(target=_watchdog, args=(st, schema), name="deployctl-ctrl-c", daemon=True).start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    _stopping.armed = True
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _stopping.armed = False


def _watchdog(st: State, schema: str) -> None:
    from deployctl import interrupt

    time.sleep(_Stopping.GRACE)
    if not _stopping.reporting.acquire(timeout=1.0):  # the main thread's report is being printed: give it a second
        _end_process(ExitCode.INTERRUPTED)
    try:
        live = getattr(st.renderer, "_live", None)  # a terminal's live progress: stop it, giving the cursor back
        if live is not None:
            live.stop()
        message = interrupt.describe(interrupt.Cancelled()) + "\n  stopped without waiting for the work in progress"
        st.renderer.error(Interrupted(message, hint=_AGAIN), schema=schema)
    finally:
        _end_process(ExitCode.INTERRUPTED, st)


def _end_process(code: int, st: State | None = None, note: str | None = None) -> None:
    """Flush what was printed and end the process now, without joining threads that are still in a call."""
    try:
        if note:
            sys.stderr.write(note + "\n")
        if st is not None:
            st.renderer.flush()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001, S110 - a closed pipe must not keep the process alive
        pass
    os._exit(int(code))


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
