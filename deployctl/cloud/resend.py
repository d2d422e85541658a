"""Whether a call's own retry sent it more than once.

A change whose reply was lost and which the policy sent again (a refusal it takes for "never acted on") can meet
the state its first attempt made: the version already destroyed, the execution already cancelled, the password
update still in progress. The wrapper then reads the state back before reporting a conflict as the user's.
"""

from __future__ import annotations


class Counted:
    """`**policy.call(...)` keywords whose retry counts the attempts: `client.m(..., **sent.kwargs); sent.resent`."""

    def __init__(self, call_kwargs: dict) -> None:
        self.attempts = 0
        self._retry = call_kwargs["retry"]
        self.kwargs = {**call_kwargs, "retry": self}

    def __call__(self, func):  # GAPIC applies `retry` as a decorator around the (timed) RPC
        def attempt(*args, **kwargs):
            self.attempts += 1
            return func(*args, **kwargs)

        return self._retry(attempt)

    @property
    def resent(self) -> bool:
        return self.attempts > 1
