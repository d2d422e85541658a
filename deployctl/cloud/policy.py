"""Explicit retry, per-attempt timeout and overall deadline for every Google API call.

The libraries' defaults retry for up to 60 s on a dead endpoint, Cloud Run Jobs RPCs have no deadline at all,
and `timeout=` alone does not bound the retries: every call made by deployctl passes `**policy.call()`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("deployctl.cloud")

_retries = 0
_retries_lock = threading.Lock()


def retries_so_far() -> int:
    """How many transient errors were retried in this process (reported with --verbose)."""
    return _retries


def _on_retry(exc: Exception) -> None:
    global _retries
    with _retries_lock:
        _retries += 1
    log.info("retrying after a transient error: %s", getattr(exc, "message", None) or exc)


def _is_transient(exc: Exception) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.ServiceUnavailable | gexc.TooManyRequests | gexc.ResourceExhausted
                      | gexc.DeadlineExceeded | gexc.InternalServerError)


class Breaker:
    """Remembers that an endpoint has stopped answering, so one command does not wait a full deadline per call.

    The clients' channel reports every RPC's outcome here. Once the endpoint has answered nothing (only
    UNAVAILABLE / DEADLINE_EXCEEDED) for a whole call deadline, later calls are tried once, briefly, and not
    retried: a dead endpoint costs a command about one deadline, not one per call. Any answer closes it again.
    """

    QUICK_ATTEMPT = 0.3  # seconds for one attempt once open

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._last_failure = 0.0

    def failed(self, started: float) -> None:
        with self._lock:
            if self._failing_since is None or started < self._failing_since:
                self._failing_since = started
            self._last_failure = time.monotonic()

    def answered(self) -> None:
        with self._lock:
            self._failing_since = None

    def open(self, deadline: float) -> bool:
        with self._lock:
            return (self._failing_since is not None
                    and self._last_failure - self._failing_since >= deadline * 0.9)


@dataclass(frozen=True)
class CallPolicy:
    attempt_timeout: float = 10.0  # seconds for one RPC attempt
    deadline: float = 30.0  # seconds for all attempts of one call together
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    operation_deadline: float = 300.0  # seconds to wait for a long-running operation
    breaker: Breaker | None = field(default=None, compare=False)  # set per Clients (emulator channel)

    def retry(self):
        from google.api_core.retry import Retry

        if self._dead():
            return Retry(predicate=lambda exc: False, timeout=Breaker.QUICK_ATTEMPT)
        return Retry(predicate=_is_transient, initial=self.initial_backoff, maximum=self.max_backoff,
                     multiplier=2.0, timeout=self.deadline, on_error=_on_retry)

    def call(self) -> dict:
        """Keyword arguments for one GAPIC call: `client.get_secret(request=..., **policy.call())`."""
        timeout = min(self.attempt_timeout, self.deadline)
        if self._dead():
            timeout = min(timeout, Breaker.QUICK_ATTEMPT)
        return {"retry": self.retry(), "timeout": timeout}

    def _dead(self) -> bool:
        return self.breaker is not None and self.breaker.open(self.deadline)

    def polling(self):
        """Operation polling that starts near 0.2 s (the library's starts at 1 s and grows to 20 s)."""
        from google.api_core.future import polling
        from google.api_core.retry import Retry, if_exception_type

        # The poll loop works by retrying on "not complete yet"; a predicate that retries nothing stops
        # at the first poll of a pending operation.
        return Retry(predicate=if_exception_type(polling._OperationNotComplete), initial=0.2, maximum=2.0,
                     multiplier=1.5, timeout=self.operation_deadline)

    def wait(self, operation, *, deadline: float | None = None):
        """Block on a long-running operation with a bounded deadline and fast polling."""
        operation._polling = self.polling()
        return operation.result(timeout=deadline or self.operation_deadline, retry=self.retry())

    def with_deadline(self, deadline: float) -> CallPolicy:
        return CallPolicy(attempt_timeout=min(self.attempt_timeout, deadline), deadline=deadline,
                          initial_backoff=self.initial_backoff, max_backoff=self.max_backoff,
                          operation_deadline=max(deadline, self.operation_deadline), breaker=self.breaker)


DEFAULT = CallPolicy()
