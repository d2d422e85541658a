"""Reading a migration job's log lines: steps, lock waits, the failing revision and its SQLSTATE diagnosis."""

from deployctl.migration import diagnose

FAILED_JOB = [
    "INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.",
    "deployctl-migrate: waiting up to 120 s for the migration lock of fiat-gateway, held by pid 42, "
    "application_name 'deployctl-migrate fiat-gateway x-1', user u, from 10.0.0.2, connected since 2026-12-03",
    "INFO  [alembic.runtime.migration] Running upgrade  -> 3b1f0e2a9c01, deposits",
    "INFO  [alembic.runtime.migration] Running upgrade 3b1f0e2a9c01 -> 7c42d9e1b302, withdrawals",
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "sqlalchemy.exc.ProgrammingError: (pg8000.dbapi.ProgrammingError) {'S': 'ERROR', 'V': 'ERROR', "
    "'C': '42501', 'M': 'permission denied for schema public', 'F': 'aclchk.c'}",
]


def test_failed_run_names_steps_holder_revision_and_sqlstate():
    r = diagnose.read(FAILED_JOB)
    assert [(s.source, s.dest) for s in r.steps] == [("", "3b1f0e2a9c01"), ("3b1f0e2a9c01", "7c42d9e1b302")]
    assert r.failing_revision == "7c42d9e1b302"
    assert r.sqlstate == "42501" and r.server_message == "permission denied for schema public"
    assert len(r.lock_waits) == 1 and "held by pid 42" in r.lock_waits[0]
    d = diagnose.diagnose(r, "fiat-gateway")
    assert d.code == "public-schema-create" and "GRANT CREATE" in d.hint


def test_auth_failure_points_at_the_services_doctor():
    lines = ["pg8000.exceptions.DatabaseError: {'S': 'FATAL', 'V': 'FATAL', 'C': '28P01', "
             "'M': 'password authentication failed for user \"cross_chain_user\"'}"]
    d = diagnose.diagnose(diagnose.read(lines), "cross-chain-integration")
    assert d.sqlstate == "28P01" and "cross_chain_user" in d.cause
    assert "deployctl doctor cross-chain-integration" in d.hint


def _traceback(cause: str, host: str) -> list[str]:
    """A job's output in the order Python prints it: the root cause first, the driver's generic error last."""
    generic = (f"Can't create a connection to host {host} and port 5432 (timeout is 10 and source_address is "
               "None).")
    return ["Traceback (most recent call last):", '  File "/x/pg8000/core.py", line 1, in __init__', cause, "",
            "The above exception was the direct cause of the following exception:", "",
            "Traceback (most recent call last):", '  File "/x/pg8000/core.py", line 2, in __init__',
            f"pg8000.exceptions.InterfaceError: {generic}", "",
            "The above exception was the direct cause of the following exception:", "",
            "Traceback (most recent call last):", '  File "/x/migrate.py", line 3, in <module>',
            f"sqlalchemy.exc.InterfaceError: (pg8000.exceptions.InterfaceError) {generic}",
            "(Background on this error at: https://sqlalche.me/e/21/rvf5)"]


def test_network_failure_without_sqlstate_is_classified_not_dumped():
    lines = _traceback("ConnectionRefusedError: [Errno 111] Connection refused", "10.0.0.3")
    d = diagnose.diagnose(diagnose.read(lines), "fiat-gateway")
    assert d is not None and d.code == "network-refused" and "deployctl doctor fiat-gateway" in d.hint


def test_a_connect_timeout_is_found_before_the_generic_last_line():
    d = diagnose.diagnose(diagnose.read(_traceback("TimeoutError: timed out", "10.0.0.3")), "fiat-gateway")
    assert d is not None and d.code == "network-timeout"


def test_the_runs_last_word_says_where_the_database_is():
    assert diagnose.read(["deployctl-migrate: at b47c9d2e5f03"]).at == ["b47c9d2e5f03"]
    assert diagnose.read(["deployctl-migrate: at aa01, dd01"]).at == ["aa01", "dd01"]
    assert diagnose.read(["deployctl-migrate: at base"]).at == []
    assert diagnose.read(FAILED_JOB).at is None  # a run that died never said


def test_a_lock_timeout_names_the_open_transactions_not_another_migration():
    lines = ["deployctl-migrate: blocked by: pid 77, application_name 'psql', user u, state idle in "
             "transaction, transaction open since 2026-12-03T12:00:00",
             "sqlalchemy.exc.OperationalError: {'S': 'ERROR', 'C': '55P03', 'M': 'canceling statement due to lock "
             "timeout'}"]
    d = diagnose.diagnose(diagnose.read(lines), "fiat-gateway")
    assert d.code == "lock-timeout" and "pid 77" in d.cause and "not another migration run" in d.cause
    assert "xact_start" in d.hint


def test_the_tail_keeps_messages_and_drops_traceback_frames():
    lines = ["Traceback (most recent call last):", '  File "/x/pg8000/legacy.py", line 1, in <module>',
             "    ^^^^^^^^^^^^", "^^^^^^", "pg8000.exceptions.DatabaseError: {'C': '28P01'}",
             "(Background on this error at: https://sqlalche.me/e/21/f405)"]
    assert diagnose.tail(lines, 25) == ["pg8000.exceptions.DatabaseError: {'C': '28P01'}",
                                        "(Background on this error at: https://sqlalche.me/e/21/f405)"]


def test_a_host_that_does_not_resolve_is_a_network_diagnosis():
    lines = _traceback("socket.gaierror: [Errno -2] Name or service not known", "db.invalid")
    d = diagnose.diagnose(diagnose.read(lines), "fiat-gateway")
    assert d is not None and d.code == "network-dns"
