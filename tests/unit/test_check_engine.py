"""The check engine: concurrency, dependency skipping, per-check timeouts that do not wait for the overrun."""

from __future__ import annotations

import threading
import time

from deployctl.checks import engine
from deployctl.checks.engine import Check, failed, passed


def test_independent_checks_run_concurrently():
    barrier = threading.Barrier(3, timeout=2)

    def meet(_env):
        barrier.wait()  # only returns if all three run at the same time
        return passed("met")

    reports = engine.run([Check(f"c{i}", "t", meet, timeout=5) for i in range(3)], None)
    assert [r.outcome.status for r in reports.values()] == ["pass"] * 3


def test_dependents_of_a_failure_are_skipped_with_the_reason():
    ran = []
    checks = [Check("a", "a", lambda e: failed("broken")),
              Check("b", "b", lambda e: ran.append("b") or passed(), depends=["a"]),
              Check("c", "c", lambda e: ran.append("c") or passed(), depends=["b"])]
    r = engine.run(checks, None)
    assert r["b"].outcome.status == "skip" and r["b"].outcome.cause == "a failed"
    assert r["c"].outcome.status == "skip" and r["c"].outcome.cause == "b was skipped"
    assert ran == []
    assert r["b"].outcome.after_failure and r["c"].outcome.after_failure  # through a skip, still a failure's


def test_a_skip_for_a_checks_own_reason_is_not_after_a_failure():
    def not_deployed(e):
        raise engine.Skip("not deployed")

    checks = [Check("a", "a", not_deployed), Check("b", "b", lambda e: passed(), depends=["a"])]
    r = engine.run(checks, None)
    assert r["a"].outcome.status == r["b"].outcome.status == "skip"
    assert not r["a"].outcome.after_failure and not r["b"].outcome.after_failure


def test_a_service_is_not_shown_as_passing_while_checks_it_needs_could_not_run():
    from deployctl.commands.doctor import _group

    checks = [Check("env", "env", lambda e: failed("no credentials")),
              Check("heads", "heads", lambda e: passed(), service="svc"),
              Check("login", "login", lambda e: passed(), depends=["env"], service="svc"),
              Check("other", "other", lambda e: passed(), service="ok")]
    groups = {g.service: g.status for g in _group(engine.run(checks, None), ["svc", "ok"])}
    assert groups == {"environment": "fail", "svc": "skip", "ok": "pass"}, groups


def test_a_check_that_overruns_fails_and_is_not_waited_for():
    release = threading.Event()
    checks = [Check("slow", "slow", lambda e: release.wait(30) and passed(), timeout=0.3),
              Check("fast", "fast", lambda e: passed())]
    start = time.monotonic()
    r = engine.run(checks, None)
    took = time.monotonic() - start
    release.set()
    assert r["slow"].outcome.status == "fail" and r["slow"].outcome.cause == "timed out after 0.3s"
    assert r["fast"].outcome.status == "pass"
    assert took < 2


def test_an_exception_becomes_a_failed_check_without_the_secret():
    from deployctl import redact

    redact.register("hunter2-secret-value")

    def boom(_env):
        raise ValueError("bad hunter2-secret-value")

    r = engine.run([Check("x", "x", boom)], None)
    assert r["x"].outcome.status == "fail" and "hunter2" not in r["x"].outcome.cause


def test_probe_and_check_timeouts_follow_the_timeout_option():
    """--timeout 20 must reach the probes (it used to be capped at 5 s while the message said to raise it),
    and --in-vpc's database checks outlast the probe job: apply + its run deadline + the log settle."""
    from deployctl.checks import vpcjob
    from deployctl.commands.doctor import probe_timeout_for

    assert probe_timeout_for(None) == 5.0 and probe_timeout_for(20.0) == 20.0 and probe_timeout_for(2.0) == 2.0
    for probe in (2.0, 5.0, 20.0):
        assert vpcjob.budget(probe) > vpcjob.APPLY_BUDGET + vpcjob.run_deadline(probe)
