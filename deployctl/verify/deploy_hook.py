"""`deploy --verify`: once every rollout of a wave (schedule.py) has moved its traffic, run the checks that touch
the services the wave changed, once, and move back what broke them.

- A failed step on a changed service (`step.service`) is that service's: its traffic moves back to what served
  before, and its revision is marked as having failed verify (history.py: a plain deploy will not quietly
  promote it again).
- A failed step on a service this run did not change, in a flow that has steps on changed services: those
  changed services are the suspects (a changed api-key-service breaks the gateway that asks it). They are moved
  back and the flow runs once more: if it passes now, the change broke it (they stay moved back, marked); if it
  still fails, the failure is pre-existing (they are moved forward again, and the run still reports the failure).

Moving traffic back is guarded by the etag of the service as this run left it: a service someone changed since
(another deploy, a rollback) is not moved, and that is said.
"""

from __future__ import annotations

from deployctl import errors
from deployctl.config import Check
from deployctl.context import Context
from deployctl.deploy import history
from deployctl.deploy.rollout import DEPLOYED, FAILED, Outcome
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
    by_name = {c.name: c for c in checks}
    for r in bad:
        if r.service in changed:
            continue
        check = by_name[r.check]
        suspects = [changed[s] for s in check.services if s in changed and changed[s].status != FAILED]
        if suspects:
            _confirm(ctx, check, r, suspects, urls, deadline)
            continue
        note = (f"verify failed: {r.check}/{r.step} on {r.service}, which this run did not change: not "
                f"attributable to this deploy; nothing moved back for it: {r.message}")
        ctx.progress(r.service, note, "fail")
        for name in set(check.services) & set(changed):
            if changed[name].status != FAILED:
                changed[name].verify = note
                changed[name].verify_failed = True


def _confirm(ctx: Context, check: Check, r: StepReport, suspects: list[Outcome], urls: dict,
             deadline: float) -> None:
    """A step on an unchanged service failed in a flow with changed services: move those back, run the flow
    once more, and blame them only if it passes now."""
    names = ", ".join(o.service for o in suspects)
    why = (f"verify failed: {r.check}/{r.step} on {r.service} (not changed by this run, its flow has steps on "
           f"{names}): {r.message}")
    ctx.progress(r.service, f"{r.check}/{r.step} failed on a service this run did not change: moving {names} back "
                            f"and running {r.check} again", "warn")
    moved = [o for o in suspects if _move_back(ctx, o, why)]
    if not moved:
        return
    again = suite.run_checks(ctx, [check], deadline=deadline, on_step=suite.progress(ctx), urls=urls)
    failed = next((x for x in again if x.outcome in ("failed", "error")), None)
    if failed is None:
        for o in moved:
            o.reason += f"; with it moved back, {check.name} passed: this deploy broke it"
            o.verify = o.reason
            ctx.progress(o.service, f"{check.name} passes with {o.service} moved back: this deploy broke it", "fail")
        return
    for o in moved:  # not theirs: the change goes forward again, and the failure is reported as it is
        note = (f"verify failed: {r.check}/{r.step} on {r.service} fails with {o.service} moved back too: "
                f"pre-existing, not caused by this deploy: {failed.message}")
        _move_forward(ctx, o, note)


def _show_failure(ctx: Context, r: StepReport) -> None:
    for line in [f"{r.check}/{r.step}: {r.message}"] + [f"  > {x}" for x in r.request] + \
            ([f"  < HTTP {r.status}"] if r.status is not None else []) + [f"  < {x}" for x in r.body]:
        ctx.progress(r.service, line, "fail")


def _move_back(ctx: Context, o: Outcome, why: str) -> bool:
    """Traffic back to what served before this run, the failed revision marked as such; only while the service
    is as this run left it (its etag, or at least its generation and traffic). True when moved."""
    from deployctl.cloud.run import RunServices

    o.status, o.verify, o.verify_failed = FAILED, why, True
    if not o.previous_traffic:
        o.reason = f"{why}; no previous revision to move traffic back to"
        return False
    run = RunServices(ctx.clients, ctx.project, ctx.region)
    where = ", ".join(f"{t.revision} ({t.percent}%)" for t in o.previous_traffic)
    changed = (f"{why}; not moved back: the service changed meanwhile (another deploy or rollback); check "
               f"`deployctl status {o.service}`")
    try:
        svc = run.get(o.service)
        if svc.etag != o.etag and (svc.generation != o.generation or svc.serving != [o.revision]):
            o.reason = changed
            ctx.progress(o.service, o.reason, "fail")
            return False
        notes = history.after_verify_failure(svc, o.revision or "")
        back = run.set_traffic(o.service, o.previous_traffic, etag=svc.etag,
                               deadline=ctx.config.environment.deploy_timeout, annotations=notes)
    except errors.Conflict:
        o.reason = changed
        ctx.progress(o.service, o.reason, "fail")
        return False
    except errors.DeployctlError as e:
        o.reason = f"{why}; moving traffic back to {where} FAILED: {e.message}"
        return False
    o.etag, o.generation = back.etag, back.generation
    ctx.progress(o.service, f"traffic moved back to {where}", "warn")
    o.reason = f"{why}; traffic moved back to {where}"
    return True


def _move_forward(ctx: Context, o: Outcome, note: str) -> None:
    """Undo a move back that did not help: all traffic to this run's revision again, unmarked."""
    from deployctl.cloud.run import RunServices, TrafficTarget

    run = RunServices(ctx.clients, ctx.project, ctx.region)
    o.verify, o.verify_failed = note, True
    try:
        svc = run.get(o.service)
        run.set_traffic(o.service, [TrafficTarget(percent=100, revision=o.revision)], etag=o.etag or svc.etag,
                        deadline=ctx.config.environment.deploy_timeout,
                        annotations=history.after_gate(svc, o.revision or ""))
    except errors.DeployctlError as e:
        o.reason = f"{note}; moving traffic forward to {o.revision} again FAILED: {e.message}"
        return
    ctx.progress(o.service, f"{note}; traffic back on {o.revision}", "warn")
    o.status, o.reason = DEPLOYED, ""
