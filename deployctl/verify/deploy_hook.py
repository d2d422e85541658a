"""`deploy --verify`: once traffic has moved to the new revision, run the checks that touch the service; if
one fails, move traffic back to what served before and say so. rollout.Options.after_traffic calls this."""

from __future__ import annotations

from deployctl import errors
from deployctl.context import Context
from deployctl.verify import suite


def verify_after_traffic(ctx: Context, service: str, previous: list, *,
                         deadline: float = suite.DEFAULT_DEADLINE) -> str | None:
    """None when the checks pass (or there are none); otherwise why, after traffic has been moved back."""
    from deployctl.cloud.run import RunServices

    checks = suite.select(ctx.config, [service])
    urls = suite.service_urls(ctx, list(dict.fromkeys(s for c in checks for s in c.services)))
    # On a first `deploy --all --verify` another service of a flow may not exist yet: that flow cannot say
    # anything about this revision, so it is skipped (and said so) rather than failed.
    absent = {s for s, u in urls.items() if isinstance(u, errors.NotFound)}
    for check in [c for c in checks if absent & set(c.services)]:
        ctx.progress(service, f"verify: {check.name} skipped ({', '.join(sorted(absent & set(check.services)))} "
                              "not deployed)", "warn")
    checks = [c for c in checks if not absent & set(c.services)]
    if not checks:
        ctx.progress(service, "verify: no checks to run for this service", "warn")
        return None
    ctx.progress(service, f"verify: {len(checks)} check(s): {', '.join(c.name for c in checks)}")
    reports = suite.run_checks(ctx, checks, deadline=deadline, on_step=suite.progress(ctx), urls=urls)
    bad = [r for r in reports if r.outcome in ("failed", "error")]
    if not bad:
        ctx.progress(service, f"verify: {len(reports)} step(s) passed", "ok")
        return None
    for r in bad:
        for line in [f"{r.check}/{r.step}: {r.message}"] + [f"  > {x}" for x in r.request] + \
                ([f"  < HTTP {r.status}"] if r.status is not None else []) + [f"  < {x}" for x in r.body]:
            ctx.progress(service, line, "fail")
    why = f"verify failed: {bad[0].check}/{bad[0].step}: {bad[0].message}"
    if not previous:
        return f"{why}; no previous revision to move traffic back to"
    run = RunServices(ctx.clients, ctx.project, ctx.region)
    where = ", ".join(f"{t.revision} ({t.percent}%)" for t in previous)
    try:
        run.set_traffic(service, previous, deadline=ctx.config.environment.deploy_timeout)
    except errors.DeployctlError as e:
        return f"{why}; moving traffic back to {where} FAILED: {e.message}"
    ctx.progress(service, f"traffic moved back to {where}", "warn")
    return f"{why}; traffic moved back to {where}"
