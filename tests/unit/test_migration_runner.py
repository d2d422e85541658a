"""The migration runner's decisions without a database: nested job timeouts, what a downgrade undoes, what is
pending on a branched tree, a stored URL linted and its password registered in every piece, and how a run that
could not be read from here but succeeded is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployctl import dbtarget, redact
from deployctl.errors import UsageError
from deployctl.migration import runner
from deployctl.migration.status import MigrationStatus
from deployctl.migration.tree import Tree
from tests.e2e.leaks import forms

ROOT = Path(__file__).resolve().parents[2]
FIAT = ["3b1f0e2a9c01", "7c42d9e1b302", "9d27c3b8e104", "c95e7a4f1d03"]


def tree(path: Path) -> Tree:
    return Tree("fiat-gateway", path, path / "alembic.ini")


@pytest.fixture()
def clean_redact():
    yield
    redact.clear()


def test_job_timeouts_nest_inside_the_task_timeout():
    wait, statement = runner.job_timeouts()
    assert wait + statement + runner.JOB_MARGIN <= runner.JOB_TASK_TIMEOUT
    wait, statement = runner.job_timeouts(300)
    assert wait == 300 and wait + statement < runner.JOB_TASK_TIMEOUT
    with pytest.raises(UsageError):
        runner.job_timeouts(runner.JOB_TASK_TIMEOUT)


def test_a_downgrade_lists_what_it_undoes():
    fiat = tree(ROOT / "migrations" / "fiat_gateway")
    assert runner._undone(fiat, "-1", [FIAT[-1]]) == [FIAT[-1]]
    assert runner._undone(fiat, "base", [FIAT[-1]]) == FIAT[::-1]
    assert runner._undone(fiat, "7c42d9e1b302", [FIAT[-1]]) == FIAT[:1:-1]
    assert runner._undone(fiat, "base", []) == []  # already at base: nothing to confirm
    assert runner._undone(fiat, "-1", None) == [FIAT[-1]]  # unknown: from the head, at most
    assert runner._direction(fiat, "fiat-gateway", "7c42d9e1b302", [FIAT[-1]]) == "downgrade"


def test_a_branch_below_current_is_pending():
    branched = tree(ROOT / "tests" / "fixtures" / "migrations" / "branched")
    assert sorted(branched.heads()) == ["c95e7a4f1d03", "dd01"]
    assert branched.pending(["c95e7a4f1d03"]) == ["dd01"]
    assert branched.pending(["dd01"]) == FIAT[2:]
    assert set(branched.pending([])) == set(FIAT) | {"dd01"}


def test_a_stored_url_with_a_raw_at_is_refused_and_every_piece_of_its_password_is_masked(clean_redact):
    password = "At@in-the-Pw#7731"
    url = f"postgresql+pg8000://cross_chain_user:{password}@10.20.0.3:5432/cross_chain?sslmode=require"
    dbtarget.register_url(url)
    # what pg8000 said, given SQLAlchemy's reading of that URL (the password ends at the first '@')
    said = redact.redact("Can't create a connection to host in-the-Pw#7731@10.20.0.3 and port 5432")
    assert "10.20.0.3" in said and not any(f in said for f in forms(password))
    assert "cross_chain_user" in redact.redact("user cross_chain_user")  # the user name is not a secret
    target = dbtarget.DatabaseTarget(
        service="cross-chain-integration", instance_key="core", instance_name="core-pg",
        connection_name="p:r:core-pg", host="10.20.0.3", configured_ip=None, port=5432, database="cross_chain",
        user="cross_chain_user", password_secret="pw", url_secret="url", ssl="require", driver="pg8000",
        mode="direct", ip_type="private", iam_auth=False)
    with pytest.raises(Exception) as refused:
        dbtarget.check_stored_url("cross-chain-integration", target, url, "url v3")
    message = redact.redact(refused.value.message)
    assert "url v3 cannot be used" in message and "unencoded-reserved" in message
    assert "deployctl dsn cross-chain-integration --write-secret" in refused.value.hint
    assert not any(f in refused.value.message for f in forms(password))


def _plan(before: MigrationStatus) -> runner.MigrationPlan:
    fiat = tree(ROOT / "migrations" / "fiat_gateway")
    return runner.MigrationPlan(fiat, "head", "job", None, before, lambda: None, "upgrade")


def test_upgrade_head_with_nothing_to_do_names_the_head():
    before = MigrationStatus("fiat-gateway", [FIAT[-1]], current=[FIAT[-1]], pending=[])
    result = runner.MigrationRun(service="fiat-gateway", runner="job", target="head", heads=[FIAT[-1]])
    runner._fill_revisions(None, result, _plan(before))
    assert result.noop and result.describe() == f"nothing to do: already at {FIAT[-1]} (head)"
    assert result.warning is None


def test_a_job_that_succeeded_where_the_read_from_here_failed_is_degraded():
    from deployctl.commands.migrate import MigrateResult, _out
    from deployctl.errors import ExitCode

    before = MigrationStatus("fiat-gateway", [FIAT[-1]], unknown="connection timed out, logging in with url v2",
                             diagnosis="network-timeout", credential="url v2")
    result = runner.MigrationRun(service="fiat-gateway", runner="job", target="head", credential="url v2",
                                 heads=[FIAT[-1]])
    runner._fill_revisions(None, result, _plan(before))
    assert result.ok and result.to_revisions == [FIAT[-1]]  # `upgrade head` succeeded: at the head
    assert "could not read the revision from here: connection timed out" in result.warning
    assert "deployctl doctor fiat-gateway" in result.warning
    assert MigrateResult(runs=[_out(result)]).exit_code() == ExitCode.DEGRADED


def test_the_local_runner_is_not_started_against_an_unreachable_database():
    before = MigrationStatus("fiat-gateway", [FIAT[-1]], unknown="connection timed out",
                             diagnosis="network-timeout")
    p = _plan(before)
    p.runner = "local"
    refused = runner._refusal(p)
    assert refused is not None and not refused.ok and "not reachable from here" in refused.error


def test_an_older_revision_with_the_database_unreadable_is_refused_not_guessed():
    fiat = tree(ROOT / "migrations" / "fiat_gateway")
    before = MigrationStatus("fiat-gateway", [FIAT[-1]], unknown="connection timed out")
    with pytest.raises(UsageError) as refused:
        runner._plan(None, fiat, "7c42d9e1b302", "job", None, before, lambda: None)
    assert "cannot tell whether --to 7c42d9e1b302 goes up or down" in refused.value.message
    assert runner._plan(None, fiat, "head", "job", None, before, lambda: None).direction == "upgrade"
    assert runner._plan(None, fiat, "-1", "job", None, before, lambda: None).undo == [FIAT[-1]]
