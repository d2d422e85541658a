"""What the three services share: JSON log lines on stdout, a request log, the health routes, and run().

Start-up never touches the database: the engine comes from deployctl.runtime on first use, so a service
answers /health while its database is down, and /health/db says why in a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deployctl import redact
from deployctl.db.sqlstate import error_fields, exception_chain, sqlstate_of

DB_PROBE_TIMEOUT = 2.0
DB_CALL_TIMEOUT = 5.0
# Environment variables whose values must never reach a log line or a response.
SECRET_ENV = ("DATABASE_URL", "DB_PASSWORD", "SIGNING_KEY", "API_KEY_PEPPER")

log = logging.getLogger("service")


# --- logging ---------------------------------------------------------------------------------------------

class JsonFormatter(logging.Formatter):
    """One JSON object per line, with Cloud Logging's `severity`; `extra={"fields": {...}}` adds keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": record.levelname,
            "message": redact.redact(record.getMessage()),
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = redact.redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def register_secret_env(environ=os.environ) -> None:
    """Register secret env values (and a DATABASE_URL's password alone) so no log line can show them."""
    for name in SECRET_ENV:
        value = environ.get(name)
        if not value:
            continue
        redact.register(value)
        if name == "DATABASE_URL":
            with contextlib.suppress(ValueError):
                password = urlsplit(value.strip()).password
                if password:
                    redact.register(password)
                    redact.register(unquote(password))


def configure_logging(environ=os.environ) -> None:
    register_secret_env(environ)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(environ.get("LOG_LEVEL", "info").upper())
    logging.captureWarnings(True)  # runtime.py warns (by name, never value) about a trailing newline


class RequestLogMiddleware:
    """Logs method, path (never the query string: it may carry tokens), status and duration per request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            fields = {"method": scope["method"], "path": scope["path"], "status": status,
                      "duration_ms": duration_ms}
            log.log(logging.WARNING if status >= 500 else logging.INFO,
                    "%s %s %s %.1fms", scope["method"], scope["path"], status, duration_ms,
                    extra={"fields": fields})


# --- database --------------------------------------------------------------------------------------------

def describe_db_error(exc: BaseException) -> str:
    """The class of a database failure, for people: SQLSTATE and server message, or the network / SSL /
    configuration cause. Never the URL or a password: driver messages that may echo the URL are not used."""
    chain = list(exception_chain(exc))
    fields = error_fields(exc)
    if fields:
        return redact.redact(f"SQLSTATE {fields['C']}: {fields.get('M', '')}".strip())
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "network: connection refused"
        if isinstance(e, socket.gaierror):
            return "network: host name not resolved"
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"ssl: certificate not trusted ({e.verify_message})"
        if isinstance(e, ssl.SSLError):
            return f"ssl: {e.reason or type(e).__name__}"
        if isinstance(e, TimeoutError):
            return "network: timeout"
        if isinstance(e, OSError) and e.errno:
            return f"network: {os.strerror(e.errno).lower()}"
    for e in chain:
        name = type(e).__name__
        if name == "ArgumentError":  # SQLAlchemy's message quotes the whole URL
            return "configuration: the database URL cannot be parsed"
        if name == "InterfaceError" and "refuses SSL" in str(e):
            return "ssl: the server refuses SSL"
        if isinstance(e, RuntimeError) and str(e).startswith("no database configured"):
            return "configuration: " + str(e)  # names environment variables only
        if isinstance(e, ValueError) and "sslmode" in str(e):
            return "configuration: " + redact.redact(str(e))  # runtime.py's message omits the value
    return f"{type(exc).__name__}"


def _select_one() -> float:
    from sqlalchemy import text

    from deployctl.runtime import get_engine

    started = time.perf_counter()
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))
    return round((time.perf_counter() - started) * 1000, 2)


class DatabaseProbe:
    """`SELECT 1` in a worker thread, bounded by `timeout`. Concurrent callers share one probe in flight, so
    a black-holed database cannot pile up threads that each wait for the connect timeout."""

    def __init__(self, timeout: float = DB_PROBE_TIMEOUT, probe: Callable[[], float] = _select_one) -> None:
        self.timeout = timeout
        self._probe = probe
        self._task: asyncio.Future | None = None

    async def check(self) -> tuple[bool, dict]:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(asyncio.to_thread(self._probe))
            # A probe that finishes after its caller gave up must not log "exception never retrieved".
            self._task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            latency_ms = await asyncio.wait_for(asyncio.shield(self._task), self.timeout)
        except TimeoutError:
            return False, {"database": "unavailable", "reason": f"timeout: no answer within {self.timeout:g} s"}
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reason string
            return False, {"database": "unavailable", "reason": describe_db_error(exc)}
        return True, {"database": "ok", "latency_ms": latency_ms}


def http_status_for_db_error(exc: BaseException) -> int:
    state = sqlstate_of(exc) or ""
    if state == "23505":
        return 409  # unique violation
    if state.startswith(("22", "23")):
        return 422  # bad data / constraint
    return 503


async def db_call(fn: Callable, *args, timeout: float = DB_CALL_TIMEOUT):
    """Run a blocking database function in a thread; failures become JSON HTTP errors with a reason."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout)
    except TimeoutError:
        raise HTTPException(503, f"database: no answer within {timeout:g} s") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("sqlalchemy", "pg8000")) or isinstance(exc, (OSError, RuntimeError)):
            log.warning("database call failed: %s", describe_db_error(exc))
            raise HTTPException(http_status_for_db_error(exc), describe_db_error(exc)) from None
        raise


# --- HTTP helpers ----------------------------------------------------------------------------------------

def to_json(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


async def read_json_object(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def require_text(body: dict, name: str, *, max_length: int, optional: bool = False) -> str | None:
    value = body.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise HTTPException(422, f"{name} must be a non-empty string of at most {max_length} characters")
    return value.strip()


def require_amount(body: dict, name: str = "amount", *, places: int) -> Decimal:
    """A positive decimal with at most `places` decimal places; given as a string (exact) or a number."""
    raw = body.get(name)
    try:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise ArithmeticError
        amount = Decimal(str(raw))
        if not amount.is_finite() or amount <= 0 or -amount.as_tuple().exponent > places:
            raise ArithmeticError
    except ArithmeticError:
        raise HTTPException(422, f"{name} must be a positive decimal with at most {places} decimal places") from None
    return amount


def limit_param(request: Request, *, default: int = 50, maximum: int = 100) -> int:
    try:
        limit = int(request.query_params.get("limit", default))
    except ValueError:
        limit = -1
    if not 1 <= limit <= maximum:
        raise HTTPException(422, f"limit must be between 1 and {maximum}")
    return limit


async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return JSONResponse({"error": "internal error"}, status_code=500)


def create_app(service: str, routes: list, *, database: bool) -> Starlette:
    """The service's routes plus /health (and /health/db when it has a database), request log, JSON errors."""
    probe = DatabaseProbe()

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "service": service, "revision": os.environ.get("K_REVISION")})

    async def health_db(_request: Request) -> JSONResponse:
        ok, body = await probe.check()
        return JSONResponse(body, status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        log.info("%s ready", service)
        yield
        if database:
            from deployctl.runtime import reset_engine

            await asyncio.to_thread(reset_engine)

    health_routes = [Route("/health", health)]
    if database:
        health_routes.append(Route("/health/db", health_db))
    app = Starlette(routes=health_routes + routes, middleware=[Middleware(RequestLogMiddleware)],
                    exception_handlers={HTTPException: _http_error, Exception: _unexpected_error},
                    lifespan=lifespan)
    app.state.db_probe = probe
    return app


def run(app_factory: Callable[[], Starlette]) -> None:
    """Serve the app with uvicorn on HOST (default 127.0.0.1) and PORT (Cloud Run sets it; default 8080)."""
    import uvicorn

    configure_logging()
    host = os.environ.get("HOST", "127.0.0.1")
    try:
        port = int(os.environ.get("PORT", "8080"))
    except ValueError:
        log.critical("PORT must be a number")
        raise SystemExit(2) from None
    uvicorn.run(app_factory(), host=host, port=port, log_config=None, access_log=False,
                server_header=False, timeout_graceful_shutdown=5)
