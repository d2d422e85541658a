"""`deploy --verify`: once every rollout of a wave (schedule.py) has moved its traffic, run the checks that touch
the services the wave changed, once. A failed step is attributed to its own service (`step.service`): a changed
service with a failed step has its traffic moved back to what served before, and its revision is marked as
having failed verify (history.py: a plain deploy will not quietly promote it again). A failed step on a service
this run did not change is reported as not attributable, and nothing is moved for it.
"""

from __future__ import annotations

from deployctl import errors
from deployctl.context import Context
from deployctl.deploy import history
from deployctl.deploy.rollout import FAILED, Outcome
from deployctl.verify import suite
from deployctl.verify.model import StepReport


def verify_wave(ctx: Context, outcomes: list[Outcome], *, deadline: float = suite.DEFAULT_DEADLINE) -> None:
    """Run the wave's checks and update `outcomes` in place (verify, status, reason)."""
    changed = {o.service: o for o in outcomes if o.moved_traffic}
    if not changed:
        return
    subject = ", ".join(changed)
    checks = suite.select(ctx.config, list(changed))
    urls = suite.service_urls(ctx, list(dict.fromkeys(s for c in checks for s in c.services)))
    # On a first `deploy --all --verify` another service of a flow may not exist yet: that flow cannot say
    # anything about this wave, so it is skipped (and said so) rather than failed.
    absent = {s for s, u in urls.items() if isinstance(u, errors.NotFound)}
    for check in [c for c in checks if absent & set(c.services)]:
        ctx.progress(subject, f"verify: {check.name} skipped ({', '.join(sorted(absent & set(check.services)))} "
                              "not deployed)", "warn")
    checks = [c for c in checks if not absent & set(c.services)]
    if not checks:
        ctx.progress(subject, "verify: no checks to run for this service", "warn")
        for o in changed.values():
            o.verify = "no checks"
        return
    ctx.progress(subject, f"verify: {len(checks)} check(s): {', '.join(c.name for c in checks)}")
    reports = suite.run_checks(ctx, checks, deadline=deadline, on_step=suite.progress(ctx), urls=urls)
    bad = [r for r in reports if r.outcome in ("failed", "error")]
    if not bad:
        ctx.progress(subject, f"verify: {len(reports)} step(s) passed", "ok")
        for o in changed.values():
            o.verify = f"passed ({len(reports)} steps)"
        return
    for r in bad:
        _show_failure(ctx, r)
    for name, o in changed.items():
        mine = [r for r in bad if r.service == name]
        if mine:
            _move_back(ctx, o, f"verify failed: {mine[0].check}/{mine[0].step}: {mine[0].message}")
    touched = {c.name: set(c.services) for c in checks}
    for r in bad:
        if r.service in changed:
            continue
        note = (f"verify failed: {r.check}/{r.step} on {r.service}, which this run did not change: not "
                f"attributable to this deploy; nothing moved back for it: {r.message}")
        ctx.progress(r.service, note, "fail")
        for name in touched.get(r.check, set()) & set(changed):
            if changed[name].status != FAILED:
                changed[name].verify = note
                changed[name].verify_failed = True


def _show_failure(ctx: Context, r: StepReport) -> None:
    for line in [f"{r.check}/{r.step}: {r.message}"] + [f"  > {x}" for x in r.request] + \
            ([f"  < HTTP {r.status}"] if r.status is not None else []) + [f"  < {x}" for x in r.body]:
        ctx.progress(r.service, line, "fail")


def _move_back(ctx: Context, o: Outcome, why: str) -> None:
    """Traffic back to what served before this run; the failed revision marked as such."""
    from deployctl.cloud.run import RunServices

    o.status, o.verify, o.verify_failed = FAILED, why, True
    if not o.previous_traffic:
        o.reason = f"{why}; no previous revision to move traffic back to"
        return
    run = RunServices(ctx.clients, ctx.project, ctx.region)
    where = ", ".join(f"{t.revision} ({t.percent}%)" for t in o.previous_traffic)
    try:
        notes = history.after_verify_failure(run.get(o.service), o.revision or "")
        run.set_traffic(o.service, o.previous_traffic, deadline=ctx.config.environment.deploy_timeout,
                        annotations=notes)
    except errors.DeployctlError as e:
        o.reason = f"{why}; moving traffic back to {where} FAILED: {e.message}"
        return
    ctx.progress(o.service, f"traffic moved back to {where}", "warn")
    o.reason = f"{why}; traffic moved back to {where}"
