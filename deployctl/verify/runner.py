"""Runs checks: the flows concurrently, the steps of one flow in order, each request bounded by the step's
timeout and by the run's deadline. A step that fails skips the rest of its flow (they may need its values).

Every value that could be a secret is registered with deployctl.redact before anything about the step is
recorded: the `${secret:...}` values, the `save_secret` values, and sensitive header values.
"""

from __future__ import annotations

import json
import re
import secrets as random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from deployctl import errors, redact
from deployctl.config import Check, CheckStep, Expectation
from deployctl.printable import printable
from deployctl.verify import template
from deployctl.verify.model import ERROR, FAILED, PASSED, SKIPPED, StepReport

BODY_LINES = 12
LINE_WIDTH = 200
MAX_PARALLEL = 8
# Header values never shown, even when they are not (known to be) secret.
SENSITIVE_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"}

SecretReader = Callable[[str, str], str]  # (secret id, version) -> value, already registered with redact
OnStep = Callable[[StepReport], None]


class _StepError(Exception):
    """The step could not be run (a reference without a value, a service without a URL, no answer)."""


class Runner:
    def __init__(self, urls: dict[str, str | errors.DeployctlError], read_secret: SecretReader, *,
                 deadline: float = 60.0, on_step: OnStep | None = None, run_id: str | None = None) -> None:
        self.urls = urls
        self.read_secret = read_secret
        self.deadline = deadline
        self.on_step = on_step or (lambda r: None)
        self.run_id = run_id or random.token_hex(4)
        self._secrets: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._ends = 0.0

    def run(self, checks: list[Check]) -> list[StepReport]:
        self._ends = time.monotonic() + self.deadline
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(checks) or 1)) as pool:
            flows = list(pool.map(self.run_check, checks))
        return [r for flow in flows for r in flow]

    def run_check(self, check: Check) -> list[StepReport]:
        from deployctl.deploy.gate import client

        saved: dict[str, dict[str, object]] = {}
        reports: list[StepReport] = []
        broken: StepReport | None = None
        with client(connections=2) as http:
            for step in check.steps:
                report = StepReport(check.name, step.name, step.service, step.method, step.path)
                if broken is not None:
                    report.failures = [f"not run: step {broken.step} {broken.outcome}"]
                else:
                    self._run_step(http, step, saved, report)
                    if not report.ok:
                        broken = report
                reports.append(report)
                self.on_step(report)
        return reports

    # --- one step ----------------------------------------------------------------------------------------

    def _run_step(self, http, step: CheckStep, saved: dict, report: StepReport) -> None:
        started = time.monotonic()
        try:
            remaining = self._ends - started
            if remaining <= 0:
                raise _StepError(f"the run's deadline ({self.deadline:g} s) passed before this step started")
            base = self.urls.get(step.service)
            if isinstance(base, errors.DeployctlError) or not base:
                why = base.message if isinstance(base, errors.DeployctlError) else "no URL"
                raise _StepError(f"service {step.service} cannot be reached: {why}")
            resolve = self._resolver(saved)
            try:
                path, headers, body = (template.render(v, resolve) for v in (step.path, step.headers, step.body))
            except template.TemplateError as e:
                raise _StepError(str(e)) from None
            for name, value in headers.items():
                if name.lower() in SENSITIVE_HEADERS:
                    redact.register(value)
            url = base.rstrip("/") + path
            report.request = describe_request(step.method, url, headers, body)
            response = self._send(http, step, url, headers, body, min(step.timeout, remaining))
            report.status = response.status_code
            report.failures = self._judge(step, response, saved, resolve)
            report.outcome = PASSED if not report.failures else FAILED
            if report.failures:
                report.body = first_lines(response.text)
        except _StepError as e:
            report.outcome, report.failures = ERROR, [printable(redact.redact(str(e)), newlines=False)]
        finally:
            report.elapsed = round(time.monotonic() - started, 3)

    def _send(self, http, step: CheckStep, url: str, headers: dict, body, timeout: float):
        import httpx

        kwargs = {"json": body} if step.body is not None else {}
        try:
            return http.request(step.method, url, headers=headers, timeout=httpx.Timeout(timeout), **kwargs)
        except httpx.TimeoutException:
            raise _StepError(f"no answer within {timeout:g} s") from None
        except httpx.HTTPError as e:
            raise _StepError(f"request failed: {type(e).__name__}") from None

    def _judge(self, step: CheckStep, response, saved: dict, resolve) -> list[str]:
        doc, parse_error = None, None
        try:
            doc = response.json() if response.content else None
        except ValueError:
            parse_error = "the body is not JSON"
        values: dict[str, object] = {}
        for var, path in step.save_secret.items():  # registered before anything about the answer is kept
            value = template.lookup(doc, path, None)
            if value is not None:
                redact.register(value if isinstance(value, str) else json.dumps(value))
                values[var] = value
        failures = []
        if response.status_code not in step.statuses:
            want = " or ".join(map(str, step.statuses))
            failures.append(f"expected HTTP {want}, got {response.status_code}")
        for path, expectation in step.expect.items():
            if parse_error:
                failures.append(f"{path}: {parse_error}")
                break
            failures += [f"{path}: {m}" for m in check_field(doc, path, expectation, resolve)]
        for var, path in step.save.items():
            value = template.lookup(doc, path, None)
            if value is None:
                failures.append(f"save {var}: the answer has no {path}")
            values[var] = value
        for var, path in step.save_secret.items():
            if var not in values:
                failures.append(f"save_secret {var}: the answer has no {path}")
        saved[step.name] = values
        return [printable(redact.redact(f), newlines=False) for f in failures]

    def _resolver(self, saved: dict):
        def resolve(ref: template.Ref):
            if ref.kind == "run":
                return self.run_id
            if ref.kind == "steps":
                if ref.key not in saved.get(ref.name, {}) or saved[ref.name][ref.key] is None:
                    raise template.TemplateError(f"{ref} has no value (step {ref.name} did not save it)")
                return saved[ref.name][ref.key]
            return self._secret(ref.name, ref.key)
        return resolve

    def _secret(self, secret_id: str, version: str) -> str:
        with self._lock:
            if (secret_id, version) not in self._secrets:
                try:
                    value = self.read_secret(secret_id, version)
                except errors.DeployctlError as e:
                    raise _StepError(f"secret {secret_id} (version {version}): {e.message}") from None
                redact.register(value)
                self._secrets[(secret_id, version)] = value
            return self._secrets[(secret_id, version)]


_TYPES = {"string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,), "array": (list,),
          "object": (dict,), "null": (type(None),)}


def check_field(doc, path: str, want: Expectation, resolve) -> list[str]:
    """The ways the field at `path` misses its expectation (none: it meets it)."""
    missing = object()
    value = template.lookup(doc, path, missing)
    if want.present is False:
        return [] if value is missing else ["expected absent, but it is present"]
    if value is missing:
        return ["missing from the answer"]
    out = []
    if "equals" in want.model_fields_set:
        expected = template.render(want.equals, resolve)
        if value != expected or isinstance(value, bool) != isinstance(expected, bool):
            out.append(f"expected {_show(expected)}, got {_show(value)}")
    if want.matches is not None:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            out.append(f"expected text matching /{want.matches}/, got {_show(value)}")
        elif not re.search(want.matches, str(value)):
            out.append(f"{_show(value)} does not match /{want.matches}/")
    if want.type is not None:
        ok = isinstance(value, _TYPES[want.type]) and not (isinstance(value, bool) and want.type != "boolean")
        if not ok:
            out.append(f"expected a JSON {want.type}, got {_show(value)}")
    return out


def _show(value) -> str:
    """A value for a failure message: redacted before it is cut (a cut secret matches no registered form)."""
    text = redact.redact(json.dumps(value, default=str))
    return text if len(text) <= 80 else text[:77] + "..."


def describe_request(method: str, url: str, headers: dict, body) -> list[str]:
    lines = [f"{method} {url}"]
    for name, value in headers.items():
        lines.append(f"{name}: {redact.MASK if name.lower() in SENSITIVE_HEADERS else value}")
    if body is not None:
        lines.append(json.dumps(body, default=str))
    return [printable(redact.redact(line), newlines=False) for line in lines]


def first_lines(text: str, limit: int = BODY_LINES) -> list[str]:
    """The first lines of an answer (pretty JSON when it is JSON), each cut to a readable width, redacted."""
    try:
        text = json.dumps(json.loads(text), indent=2)
    except ValueError:
        pass
    lines = [printable(line) for line in redact.redact(text).splitlines()]
    out = [line if len(line) <= LINE_WIDTH else line[:LINE_WIDTH - 3] + "..." for line in lines[:limit]]
    if len(lines) > limit:
        out.append(f"... ({len(lines) - limit} more lines)")
    return out


__all__ = ["Runner", "StepReport", "PASSED", "FAILED", "ERROR", "SKIPPED"]
