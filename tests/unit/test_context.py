"""The Context every command gets: what it builds once, also when threads ask for it first."""

from __future__ import annotations

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
