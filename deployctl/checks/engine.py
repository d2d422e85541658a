"""The check engine: checks with ids, dependencies and timeouts, run concurrently on threads.

A check is a small function `fn(env) -> Outcome`. Independent checks run at the same time; a check whose
dependency did not pass (fail, or itself skipped) is skipped with the reason; each check is bounded by its own
timeout: one that overruns is reported as failed ("timed out after Ns") and the engine moves on without waiting
for its thread (daemon threads, so a stuck socket cannot hold the process either).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from deployctl import redact

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
STATUSES = (PASS, WARN, FAIL, SKIP)


@dataclass
class Outcome:
    """What a check found: a status, the cause (why), the evidence (never a secret: fingerprints only) and the
    next step as a command. `fix` names a repair in deployctl.checks.fixes that --fix may apply."""

    status: str
    cause: str = ""
    evidence: list[str] = field(default_factory=list)
    next_step: str = ""
    fix: str | None = None
    fix_args: dict = field(default_factory=dict)
    after_failure: bool = False  # skipped because a dependency failed, directly or through other skips

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown check status {self.status!r}")


def passed(cause: str = "", evidence: list[str] | None = None) -> Outcome:
    return Outcome(PASS, cause, evidence or [])


def warned(cause: str, next_step: str = "", evidence: list[str] | None = None, **kw) -> Outcome:
    return Outcome(WARN, cause, evidence or [], next_step, **kw)


def failed(cause: str, next_step: str = "", evidence: list[str] | None = None, **kw) -> Outcome:
    return Outcome(FAIL, cause, evidence or [], next_step, **kw)


def skipped(cause: str, evidence: list[str] | None = None) -> Outcome:
    return Outcome(SKIP, cause, evidence or [])


class Skip(Exception):
    """Raised inside a check when it does not apply (e.g. the service is not deployed)."""


@dataclass
class Check:
    id: str  # e.g. "db.login"
    title: str
    run: Callable[..., Outcome]
    service: str = ""  # "" for environment-wide checks
    depends: list[str] = field(default_factory=list)  # keys of other checks
    timeout: float = 10.0

    @property
    def key(self) -> str:
        return f"{self.service}:{self.id}" if self.service else self.id


@dataclass
class Report:
    check: Check
    outcome: Outcome
    elapsed: float


def _call(check: Check, env) -> Outcome:
    try:
        out = check.run(env)
        return out if isinstance(out, Outcome) else failed(f"check returned {type(out).__name__}")
    except Skip as e:
        return skipped(str(e))
    except Exception as e:  # noqa: BLE001 - a check that breaks is a failed check with its reason
        from deployctl.errors import DeployctlError

        if isinstance(e, DeployctlError):
            return failed(redact.redact(e.message), redact.redact(e.hint or ""))
        import logging

        logging.getLogger("deployctl.checks").info("check %s raised:\n%s", check.key,
                                                   redact.redact(traceback.format_exc()))
        return failed(f"the check itself failed: {type(e).__name__}: {redact.redact(str(e))}",
                      "re-run with -vv for the traceback")


def run(checks: list[Check], env, *, max_workers: int = 16,
        on_done: Callable[[Report], None] | None = None) -> dict[str, Report]:
    """Run every check (dependencies first); returns reports keyed by check key, in the checks' order."""
    by_key = {c.key: c for c in checks}
    reports: dict[str, Report] = {}
    running: dict[str, tuple[float, threading.Thread]] = {}  # key -> (start, thread)
    results: dict[str, Outcome] = {}
    cond = threading.Condition()
    pending = list(checks)

    def worker(check: Check) -> None:
        out = _call(check, env)
        with cond:
            results[check.key] = out
            cond.notify_all()

    def finish(check: Check, outcome: Outcome, elapsed: float) -> None:
        reports[check.key] = Report(check, outcome, elapsed)
        if on_done:
            on_done(reports[check.key])

    while pending or running:
        # Skip what cannot run; start what can.
        for check in list(pending):
            deps = [d for d in check.depends if d in by_key]
            blocked = [d for d in deps if d in reports and reports[d].outcome.status in (FAIL, SKIP)]
            if blocked:
                pending.remove(check)
                d = reports[blocked[0]]
                why = "failed" if d.outcome.status == FAIL else "was skipped"
                finish(check, replace(skipped(f"{d.check.id} {why}"),
                                      after_failure=any(reports[b].outcome.status == FAIL or
                                                        reports[b].outcome.after_failure for b in blocked)), 0.0)
            elif all(d in reports for d in deps) and len(running) < max_workers:
                pending.remove(check)
                t = threading.Thread(target=worker, args=(check,), name=f"check {check.key}", daemon=True)
                running[check.key] = (time.monotonic(), t)
                t.start()
        if not running:
            if pending:  # a dependency on a key that never finishes: a bug in the registry, not a hang
                for check in pending:
                    finish(check, skipped("its dependencies could not run"), 0.0)
                pending.clear()
            break
        with cond:
            now = time.monotonic()
            done = [k for k in running if k in results]
            if not done:
                nearest = min(start + by_key[k].timeout for k, (start, _) in running.items())
                cond.wait(timeout=max(0.0, nearest - now) + 0.005)
                now = time.monotonic()
                done = [k for k in running if k in results]
            for k in done:
                start, _ = running.pop(k)
                finish(by_key[k], results[k], now - start)
            for k, (start, _) in list(running.items()):
                if now - start >= by_key[k].timeout:
                    running.pop(k)
                    finish(by_key[k], failed(f"timed out after {by_key[k].timeout:g}s",
                                             "check the network path (deployctl doctor -v), or raise --timeout"),
                           now - start)
    return {c.key: reports[c.key] for c in checks if c.key in reports}
