"""Explicit retry, per-attempt timeout and overall deadline for every Google API call.

The libraries' defaults retry for up to 60 s on a dead endpoint, Cloud Run Jobs RPCs have no deadline at all,
and `timeout=` alone does not bound the retries: every call made by deployctl passes `**policy.call()`.

Reads retry every transient error. A mutation (create, update, delete, add a version, run a job) passes
`**policy.call(mutation=True)` and is retried only when the request certainly did not reach the server: a quota
refusal (RESOURCE_EXHAUSTED), or an UNAVAILABLE that grpc raised because no connection was ever made. Any other
UNAVAILABLE (a reset stream, a closed socket, GOAWAY, a front end's 503) and DEADLINE_EXCEEDED or INTERNAL may
come after the server acted, and repeating the change would start a second execution or add a duplicate
version; such a failure says to check whether the change was made (cloud/errors.translate).
Long-running operations are waited with `policy.wait(op)`: each poll is one bounded call, Ctrl-C stops it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import re
import threading
import time
from collections.abc import Callable
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


# grpc's own words for an RPC that was never sent because no connection was made: connect refused, DNS
# failed, no subchannel ever became ready (its "last error" may then say reset or closed: that was the handshake),
# the HTTP/2 handshake timed out.
_NEVER_CONNECTED = re.compile(r"failed to connect to all addresses|dns resolution failed|errors resolving|"
                              r"connection refused|timed out before receiving settings", re.IGNORECASE)
# The channel's auth plugin could not get a token (expired or revoked credentials): UNAVAILABLE on the wire,
# but retrying cannot help; errors.translate turns it into the credentials error.
_CREDENTIALS_FAILED = "getting metadata from plugin failed"


def _details(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc)


def credentials_failed(exc: Exception) -> bool:
    """An UNAVAILABLE from the channel's credentials plugin (the token could not be refreshed), not the network."""
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.ServiceUnavailable) and _CREDENTIALS_FAILED in _details(exc).lower()


def _not_acted_on(exc: Exception) -> bool:
    """The request certainly did not reach the server, or was refused for quota: safe to send again, even a change."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.TooManyRequests | gexc.ResourceExhausted):
        return True
    return isinstance(exc, gexc.ServiceUnavailable) and bool(_NEVER_CONNECTED.search(_details(exc)))


def _is_transient(exc: Exception) -> bool:
    from google.api_core import exceptions as gexc

    if credentials_failed(exc):
        return False
    return isinstance(exc, gexc.ServiceUnavailable | gexc.TooManyRequests | gexc.ResourceExhausted
                      | gexc.DeadlineExceeded | gexc.InternalServerError)


def _is_quota(exc: Exception) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.TooManyRequests | gexc.ResourceExhausted)


_SENT_CHANGE = "_deployctl_sent_change"


def sent_change(exc: BaseException) -> bool:
    """True for the error of a mutation's call (policy.call(mutation=True)): the server may have made the change."""
    return bool(getattr(exc, _SENT_CHANGE, False))


class Breaker:
    """Remembers that an endpoint has stopped answering, so one command does not wait a full deadline per call.

    The clients' channel reports every RPC attempt's outcome here. The breaker opens only after several attempts
    in a row got no answer (no connection, or DEADLINE_EXCEEDED) and that silence spans at least a whole call
    deadline: one slow attempt never opens it. Once open, a call gets one attempt, with the policy's full attempt
    timeout, and no retries: a dead endpoint costs a command about one deadline plus one attempt per further call,
    not a deadline per call, and an endpoint that is slow but alive still answers within the attempt, which closes
    the breaker. The breaker never shortens an attempt, so every timeout it sees is a real one.
    """

    MIN_FAILURES = 3  # attempts in a row without an answer

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._failing_since = 0.0
        self._last_failure = 0.0

    def failed(self, started: float) -> None:
        with self._lock:
            self._failing_since = started if self._failures == 0 else min(self._failing_since, started)
            self._failures += 1
            self._last_failure = self._clock()

    def answered(self) -> None:
        with self._lock:
            self._failures = 0

    def open(self, deadline: float) -> bool:
        with self._lock:
            return (self._failures >= self.MIN_FAILURES
                    and self._last_failure - self._failing_since >= deadline * 0.9)


@functools.cache
def _retry_class():
    """api_core's Retry, with three changes: after a quota error the next wait is longer (retrying at 0.1 s just
    uses the quota up again), a Ctrl-C stops the retries at the next wait (a deploy's workers poll here), and the
    error of a mutation's call is marked (sent_change) so that its message says to check whether it was made."""
    from google.api_core.retry import Retry, retry_target

    class PolicyRetry(Retry):
        def __init__(self, *args, mutation: bool = False, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.mutation = mutation

        def __call__(self, func, on_error=None):
            on_error = self._on_error or on_error

            @functools.wraps(func)
            def retried(*args, **kwargs):
                backoff = _Backoff(self._initial, self._maximum, self._multiplier)

                def seen(exc: Exception) -> None:
                    backoff.saw(exc)
                    if on_error is not None:
                        on_error(exc)

                try:
                    return retry_target(functools.partial(func, *args, **kwargs), self._predicate, backoff,
                                        timeout=self._timeout, on_error=seen)
                except Exception as exc:
                    if self.mutation:
                        setattr(exc, _SENT_CHANGE, True)
                    raise

            return retried

    return PolicyRetry


class _Backoff:
    """Exponential backoff with jitter; a quota error raises the next wait to at least QUOTA_INITIAL, growing."""

    QUOTA_INITIAL = 1.0
    QUOTA_MAXIMUM = 10.0

    def __init__(self, initial: float, maximum: float, multiplier: float) -> None:
        self.delay, self.maximum, self.multiplier = min(initial, maximum), maximum, multiplier
        self.quota_delay = self.QUOTA_INITIAL
        self.last: Exception | None = None

    def saw(self, exc: Exception) -> None:
        self.last = exc

    def __iter__(self):
        return self

    def __next__(self) -> float:
        from deployctl import interrupt

        interrupt.check()  # raises Cancelled: the retry loop does not catch KeyboardInterrupt
        if self.last is not None and _is_quota(self.last):
            wait = random.uniform(self.quota_delay / 2, self.quota_delay)
            self.quota_delay = min(self.quota_delay * 2, self.QUOTA_MAXIMUM)
            return wait
        wait = random.uniform(0.0, self.delay)
        self.delay = min(self.delay * self.multiplier, self.maximum)
        return wait


@dataclass(frozen=True)
class CallPolicy:
    attempt_timeout: float = 10.0  # seconds for one RPC attempt
    deadline: float = 30.0  # seconds for all attempts of one call together
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    operation_deadline: float = 300.0  # seconds to wait for a long-running operation
    breaker: Breaker | None = field(default=None, compare=False)  # set per Clients

    def retry(self, *, mutation: bool = False, timeout: float | None = None):
        """The Retry for one call (`timeout`: a shorter overall limit than the policy's deadline)."""
        return self._retry(mutation, self.deadline if timeout is None else min(timeout, self.deadline))

    def _retry(self, mutation: bool, timeout: float, single: bool = False):
        cls = _retry_class()
        if single:
            return cls(predicate=lambda exc: False, timeout=timeout, mutation=mutation)
        return cls(predicate=_not_acted_on if mutation else _is_transient, initial=self.initial_backoff,
                   maximum=self.max_backoff, multiplier=2.0, timeout=timeout, on_error=_on_retry, mutation=mutation)

    def call(self, *, mutation: bool = False, timeout: float | None = None) -> dict:
        """Keyword arguments for one GAPIC call: `client.get_secret(request=..., **policy.call())`.

        `mutation=True` for a call that changes something and is not safe to repeat once the server acted.
        """
        limit = self.deadline if timeout is None else min(timeout, self.deadline)
        attempt = min(self.attempt_timeout, limit)
        if self.breaker is not None and self.breaker.open(self.deadline):
            # The endpoint has answered nothing for a whole deadline: one whole attempt, no retries.
            return {"retry": self._retry(mutation, attempt, single=True), "timeout": attempt}
        return {"retry": self._retry(mutation, limit), "timeout": attempt}

    def wait(self, operation, *, deadline: float | None = None, on_poll: Callable | None = None):
        """Wait for a long-running operation and return its result, within `deadline` (default: the policy's
        operation deadline).

        Each poll (GetOperation) is one call with this policy's attempt timeout and read retries, so a poll that
        gets no answer ends (the library's own poll waits up to 600 s for one). A poll that fails for want of an
        answer is tried again while the deadline has time: the operation runs on without us. Polls start 0.2 s
        apart and grow to 2 s; between them `interrupt.sleep` lets Ctrl-C stop a worker thread. `on_poll(operation)`
        is called after every poll that finds the operation still running (e.g. to report its metadata). An
        operation that fails raises its Google error (callers translate it); one that outlives the deadline, or
        whose polls got no answer until then, raises a DeployctlError saying it may still be running.
        """
        from deployctl import interrupt

        limit = deadline or self.operation_deadline
        end = time.monotonic() + limit
        refresh = _bounded_refresh(operation)
        delay = 0.2
        while True:
            remaining, answered = end - time.monotonic(), True
            if not operation.operation.done:
                try:
                    refresh(self.call(timeout=max(remaining, 0.1)))
                except Exception as exc:
                    if not _no_answer(exc):
                        raise
                    if time.monotonic() + delay > end:
                        raise _gave_up(operation, limit, exc) from exc
                    answered = False
                    log.info("no answer to a poll of %s (%s); polling again", operation.operation.name,
                             _details(exc))
            if operation.operation.done:
                return operation.result()  # the result is set: no further poll
            if on_poll is not None and answered:
                on_poll(operation)
            if time.monotonic() + delay > end:
                raise _gave_up(operation, limit)
            interrupt.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def with_deadline(self, deadline: float) -> CallPolicy:
        """Each call ends within `deadline` seconds, retries included; one attempt stays at most attempt_timeout
        (a longer single attempt would leave no time to retry). Operations keep their own longer limit."""
        return CallPolicy(attempt_timeout=min(self.attempt_timeout, deadline), deadline=deadline,
                          initial_backoff=self.initial_backoff, max_backoff=self.max_backoff,
                          operation_deadline=max(deadline, self.operation_deadline), breaker=self.breaker)


def _no_answer(exc: Exception) -> bool:
    """A poll that failed for want of an answer (not a definite error such as NOT_FOUND): worth polling again."""
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.RetryError) or _is_transient(exc)


def _gave_up(operation, limit: float, exc: Exception | None = None):
    from deployctl import errors

    name = operation.operation.name
    hint = "check its state in the console (or `deployctl status`) before retrying: the change may have been made"
    if exc is None:
        return errors.CloudError(f"operation {name} did not finish within {limit:g} s; it may still be running",
                                 hint=hint, code="timeout", details={"operation": name})
    detail = " ".join(_details(exc).split())
    return errors.Unreachable(f"no answer from the API while waiting for operation {name} ({limit:g} s); "
                              "it may still be running", hint=hint, details={"operation": name, "detail": detail})


def _bounded_refresh(operation) -> Callable[[dict], None]:
    """Refresh `operation` once with the given retry/timeout keywords.

    A GAPIC operation's refresh is `functools.partial(operations_client.get_operation, name, metadata=...)`,
    which takes `timeout` (api_core's Operation.done() passes only `retry`, leaving the 600 s default).
    """
    refresh = operation._refresh
    target = getattr(refresh, "func", refresh)
    try:
        takes_timeout = "timeout" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        takes_timeout = False

    def poll(kwargs: dict) -> None:
        args = kwargs if takes_timeout else {"retry": kwargs["retry"]}
        operation._operation = refresh(**args)
        operation._set_result_from_operation()

    return poll


DEFAULT = CallPolicy()
