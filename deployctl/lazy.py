"""A cached_property that computes its value at most once per instance, also when threads ask at once.

functools.cached_property has had no lock since Python 3.12 (deployctl supports 3.11+), and doctor's check
threads are the first to reach the context's config and the cloud clients: each built its own (a channel each,
with real credentials)."""

from __future__ import annotations

import threading
from functools import cached_property

_GUARD = threading.Lock()  # only to create an instance's lock once


class once_property(cached_property):  # noqa: N801 - used like the decorator it extends
    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        lock = instance.__dict__.get("_once_lock")
        if lock is None:
            with _GUARD:
                lock = instance.__dict__.setdefault("_once_lock", threading.RLock())  # re-entrant: one may use another
        with lock:
            return super().__get__(instance, owner)
