"""The Context every command gets: what it builds once, also when threads ask for it first."""

from __future__ import annotations

import functools
import threading
import time

from deployctl.cloud import clients as clients_mod
from deployctl.context import Context


def test_concurrent_first_use_builds_the_clients_once(monkeypatch):
    """doctor's checks reach ctx.clients from their threads first. Python 3.12 dropped cached_property's lock,
    and each thread built Clients of its own (its own channel and breaker; for the local cloud, ensure_running
    again): 61 runs in 200 had several on 3.12.1. (On 3.11 cached_property still serialises, so this passes
    there either way.)"""
    built = []
    real = clients_mod.Clients

    class SlowClients(real):
        def __init__(self, **kwargs) -> None:
            time.sleep(0.05)  # room for the other threads to arrive while the first one builds
            super().__init__(**kwargs)
            built.append(self)

    monkeypatch.setattr(clients_mod, "Clients", SlowClients)
    monkeypatch.setenv("DEPLOYCTL_EMULATOR_HOST", "127.0.0.1:1")  # no config, no local cloud: just the factory
    ctx = Context()
    barrier = threading.Barrier(6)
    seen = []

    def first_use() -> None:
        barrier.wait()
        seen.append(ctx.clients)

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(built) == 1 and all(c is built[0] for c in seen) and len(seen) == 6, (len(built), len(seen))


def _at_once(n: int, fn) -> list:
    barrier, seen = threading.Barrier(n), []

    def run() -> None:
        barrier.wait()
        seen.append(fn())

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return seen


def test_once_property_computes_once_under_concurrent_first_use():
    """What ctx.config and every Clients property use instead of cached_property (no lock since 3.12)."""
    from deployctl.lazy import once_property

    calls = []

    class Thing:
        @once_property
        def value(self):
            calls.append(1)
            time.sleep(0.05)
            return object()

        @once_property
        def outer(self):  # one property using another under the same (re-entrant) lock
            return self.value

    thing = Thing()
    seen = _at_once(8, lambda: thing.outer)
    assert len(calls) == 1 and len(seen) == 8 and all(v is thing.value for v in seen)


def test_each_cloud_client_is_built_once_under_concurrent_first_use():
    clients = clients_mod.Clients(emulator_host="127.0.0.1:1")  # grpc channels connect lazily: nothing dialled
    seen = _at_once(6, lambda: clients.services)
    assert len({id(c) for c in seen}) == 1 and seen[0] is clients.services


def test_what_threads_reach_first_is_a_once_property():
    """On any Python (the tests above can only fail on 3.12+, where cached_property lost its lock)."""
    from deployctl.lazy import once_property

    assert isinstance(Context.__dict__["config"], once_property)
    assert isinstance(Context.__dict__["clients"], once_property)
    lazy = {n for n, v in vars(clients_mod.Clients).items() if isinstance(v, once_property)}
    assert {"channel", "secret_manager", "services", "revisions", "jobs", "executions", "sql_instances",
            "sql_users", "sql_databases", "sql_operations", "logging"} <= lazy
    assert not [n for n, v in vars(clients_mod.Clients).items() if type(v) is functools.cached_property]
