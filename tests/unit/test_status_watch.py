"""`status --watch` refreshes until Ctrl-C, but ends (with the error's exit code) when refreshing cannot help.
In process, through Typer's runner, with the status command replaced: what is tested is the CLI's loop. No test
here raises KeyboardInterrupt: the CLI would mark this whole process interrupted (deployctl.interrupt)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from deployctl import errors
from deployctl.cli.main import app
from deployctl.commands import status as status_cmd


@pytest.mark.parametrize("error, code", [
    (errors.PermissionDenied("the Google Cloud credentials could not be used: invalid_grant", code="credentials"), 1),
    (errors.ConfigError("no Google Cloud credentials", code="no-credentials"), 2),
])
def test_watch_ends_on_credentials_that_cannot_work(monkeypatch, error, code):
    """Revoked credentials (exit 1, not a usage error) printed the same error every interval until killed."""
    calls = []

    def status(ctx, services=None):
        calls.append(1)
        if len(calls) > 3:  # the old loop: end the test instead of watching for ever (a usage error ends it;
            raise errors.ConfigError("stop")  # a KeyboardInterrupt would leave this process interrupted)
        raise error

    monkeypatch.setattr(status_cmd, "status", status)
    run = CliRunner().invoke(app, ["status", "--watch", "--interval", "0.5"])
    assert calls == [1] and run.exit_code == code, (calls, run.output)


def test_watch_goes_on_through_an_unreachable_cloud(monkeypatch):
    """A cloud that does not answer now may answer at the next refresh: that is what watching is for."""
    calls = []

    def status(ctx, services=None):
        calls.append(1)
        if len(calls) == 2:
            raise errors.ConfigError("stop")  # ends the watch (exit 2) once it has refreshed
        raise errors.Unreachable("no answer from the API")

    monkeypatch.setattr(status_cmd, "status", status)
    run = CliRunner().invoke(app, ["status", "--watch", "--interval", "0.5"])
    assert len(calls) == 2 and run.exit_code == 2, (calls, run.output)
