"""The bounds a migration runs with (DEPLOYCTL_LOCK_WAIT / LOCK_TIMEOUT / STATEMENT_TIMEOUT) cannot be switched
off: in PostgreSQL 0 means no limit, and NaN never ends a wait."""

from __future__ import annotations

import pytest

from deployctl import migrate_env
from deployctl.errors import DeployctlError


@pytest.mark.parametrize("name", ["DEPLOYCTL_LOCK_TIMEOUT", "DEPLOYCTL_STATEMENT_TIMEOUT"])
@pytest.mark.parametrize("raw", ["0", "0.0", "-1", "nan", "inf", "0.0001", "1e12", "ten"])
def test_a_postgres_bound_must_be_positive_and_finite(monkeypatch, name, raw):
    monkeypatch.setenv(name, raw)
    with pytest.raises(DeployctlError) as err:
        migrate_env._seconds(name, 10.0)
    assert err.value.code == "config" and name in err.value.message and err.value.hint


@pytest.mark.parametrize("raw", ["nan", "inf", "-1"])
def test_the_lock_wait_may_be_zero_but_never_endless(monkeypatch, raw):
    monkeypatch.setenv("DEPLOYCTL_LOCK_WAIT", "0")
    assert migrate_env._seconds("DEPLOYCTL_LOCK_WAIT", 120.0, zero_ok=True) == 0.0
    monkeypatch.setenv("DEPLOYCTL_LOCK_WAIT", raw)
    with pytest.raises(DeployctlError):
        migrate_env._seconds("DEPLOYCTL_LOCK_WAIT", 120.0, zero_ok=True)


def test_session_settings_never_say_zero(monkeypatch):
    monkeypatch.setenv("DEPLOYCTL_LOCK_TIMEOUT", "0.001")
    assert migrate_env._seconds("DEPLOYCTL_LOCK_TIMEOUT", 10.0) == 0.001
    assert migrate_env._session_settings(0.0015, 2.5) == ["SET lock_timeout = '1ms'",
                                                          "SET statement_timeout = '2500ms'"]
