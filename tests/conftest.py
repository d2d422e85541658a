"""Shared fixtures: real PostgreSQL clusters and the local cloud, started once per test session."""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@pytest.fixture(autouse=True)
def _no_interrupt_left_behind():
    """A KeyboardInterrupt through the CLI in process marks the whole process interrupted (deployctl.interrupt),
    as it should for a CLI about to exit: every later wait in this test worker would stop at once (seen as other
    tests failing at random, and the worker ending on a keyboard-interrupt)."""
    yield
    from deployctl import interrupt

    assert not interrupt.requested(), "this test left the process interrupted (deployctl.interrupt.request)"


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory):
    """A real PostgreSQL 15 cluster: scram-sha-256, TCP only over SSL, on its own loopback address."""
    from deployctl.emulator.netaddr import allocate_private_ip
    from deployctl.emulator.postgres import Cluster, cluster_base

    key = str(tmp_path_factory.mktemp("pg"))
    cluster = Cluster(cluster_base(key) / "test", host=allocate_private_ip((5432,)), port=5432,
                      superuser_password=secrets.token_urlsafe(16))
    cluster.init()
    cluster.start()
    yield cluster
    cluster.destroy()
    with contextlib.suppress(OSError):
        cluster.data_dir.parent.rmdir()


@pytest.fixture()
def fresh_db(pg_cluster, request):
    """A database of its own for one test, owned by a new login role; yields (dbname, user, password)."""
    name = "t_" + secrets.token_hex(4)
    password = secrets.token_urlsafe(12)
    pg_cluster.create_role(name, password)
    pg_cluster.create_database(name, owner=name)
    yield name, name, password
    pg_cluster.drop_database(name)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """The local cloud, in-process on port 0, with its own state directory. Tests use unique names."""
    from deployctl.emulator.server import Emulator

    state = tmp_path_factory.mktemp("emulator")
    emu = Emulator(state, project_root=ROOT)
    emu.start()
    yield emu
    emu.stop()
    from deployctl.emulator import sqladmin

    sqladmin.purge(emu.state_dir)  # its clusters live outside the temp dir


@pytest.fixture(scope="session")
def clients(emulator):
    """deployctl's client factory pointed at the in-process emulator (the real Google clients over gRPC)."""
    from deployctl.cloud.clients import Clients

    c = Clients(emulator_host=emulator.address, sqladmin_endpoint=emulator.rest_address)
    yield c
    c.close()


@pytest.fixture()
def python_exe() -> str:
    return sys.executable
