"""The rollouts of one deploy: plan every service first, then roll them out, independent ones concurrently and
`depends_on` first; a service whose dependency failed is skipped, and says so.

With `deploy --verify` the services go in waves (the levels of depends_on): a wave's checks run once every
rollout of the wave has moved its traffic, so a check never meets a peer that is half-way through its own
rollout, and a dependency that fails its checks is moved back before its dependents are deployed on top of it.

Ctrl-C stops every worker at its next wait (all of them sleep through deployctl.interrupt), does not wait for
them beyond a moment, and says what was done and what was not (a rollout whose traffic shift was already sent
may have moved its traffic: it says so).
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import replace

from deployctl import errors, interrupt
from deployctl.context import Context
from deployctl.deploy.prepare import Prepared, Preparer
from deployctl.deploy.rollout import FAILED, PLANNED, SKIPPED, UNCHANGED_, Options, Outcome, rollout
from deployctl.deploy.workers import pool

MAX_PARALLEL = 8


def deploy_all(ctx: Context, names: list[str], opts: Options) -> list[Outcome]:
    ctx.config, ctx.clients  # noqa: B018 - load once, before threads race to build them
    preparer = Preparer(ctx, force=opts.force)
    names, included = preparer.with_missing_dependencies(names)
    for name, why in included.items():
        ctx.progress(name, f"included: {why}")
    prepared = preparer.all(names)
    for name, why in included.items():
        if isinstance(prepared[name], Prepared):
            prepared[name].plan = replace(prepared[name].plan, reason=why)
    if opts.dry_run:
        return [_planned(n, p) for n, p in prepared.items()]
    selected = set(names)
    deps = {n: [d for d in ctx.config.services[n].depends_on if d in selected] for n in names}
    outcomes: dict[str, Outcome] = {}
    for wave in (waves(names, deps) if opts.verify else [names]):
        _run_wave(ctx, wave, deps, prepared, opts, preparer, outcomes, names)
        if opts.verify:
            opts.verify(ctx, [outcomes[n] for n in wave])
    return [outcomes[n] for n in names]


def waves(names: list[str], deps: dict[str, list[str]]) -> list[list[str]]:
    """`names` grouped by depends_on level (a service comes after everything it depends on), in config order."""
    level: dict[str, int] = {}

    def of(name: str) -> int:
        if name not in level:
            level[name] = 1 + max((of(d) for d in deps.get(name, [])), default=-1)
        return level[name]

    out: dict[int, list[str]] = {}
    for name in names:
        out.setdefault(of(name), []).append(name)
    return [out[k] for k in sorted(out)]


def _planned(name: str, p: Prepared | errors.DeployctlError) -> Outcome:
    if isinstance(p, errors.DeployctlError):
        return Outcome(name, FAILED, reason=p.message, hint=p.hint or "")
    previous = p.service.serving if p.service else []
    if p.plan.blocked:
        return Outcome(name, FAILED, plan=p.plan, reason=p.plan.blocked, previous=previous, warnings=p.warnings)
    return Outcome(name, PLANNED if p.plan.pending else UNCHANGED_, plan=p.plan, previous=previous,
                   revision=p.plan.serving, warnings=p.warnings)


def _run_wave(ctx: Context, wave: list[str], deps: dict[str, list[str]], prepared: dict, opts: Options,
              preparer: Preparer, outcomes: dict[str, Outcome], names: list[str]) -> None:
    running: dict[Future, str] = {}
    launched: set[str] = set()  # noted before submit: a Ctrl-C can land inside submit() itself
    try:
        with pool(min(MAX_PARALLEL, len(wave))) as workers:
            while any(n not in outcomes for n in wave):
                for name in wave:
                    if name in outcomes or name in running.values():
                        continue
                    bad = [d for d in deps[name] if d in outcomes and outcomes[d].status in (FAILED, SKIPPED)]
                    if bad:
                        outcomes[name] = Outcome(name, SKIPPED, reason=f"dependency failed: {', '.join(bad)}")
                        ctx.progress(name, outcomes[name].reason, "skip")
                    elif all(d in outcomes for d in deps[name]):
                        launched.add(name)
                        running[workers.submit(_guarded, ctx, name, prepared[name], opts, preparer)] = name
                if not running:
                    continue
                # A timeout keeps the main thread, where Ctrl-C lands, returning to Python regularly.
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    outcomes[running.pop(fut)] = fut.result()
    except KeyboardInterrupt:
        raise _interrupted(names, prepared, outcomes, running, launched, opts.shifting) from None


def _interrupted(names: list[str], prepared: dict, outcomes: dict[str, Outcome], running: dict[Future, str],
                 launched: set[str], shifting: dict[str, str] | None = None) -> interrupt.Cancelled:
    """Ctrl-C: the workers stop at their next wait (interrupt.request, by the pool); give them a moment to say
    so, then report what was done and what was not."""
    interrupt.request()
    wait(list(running), timeout=1.0)
    for fut, name in running.items():
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            outcomes[name] = fut.result()
    done = [f"{o.service} {o.status}" + (f" ({o.revision})" if o.revision else "") for o in outcomes.values()]
    not_done = []
    for name in names:
        if name in outcomes:
            continue
        prep = prepared.get(name)
        live = prep.service if isinstance(prep, Prepared) else None
        serving = ", ".join(live.serving) if live else ""
        if name in (shifting or {}):
            not_done.append(f"{name} stopped after its traffic shift to {shifting[name]} was sent: traffic may have "
                            f"moved to it (it served {serving or 'no revision'}); check `deployctl status {name}`")
            continue
        started = name in launched
        not_done.append(f"{name} {'stopped before moving traffic' if started else 'not started'}; serving stays "
                        f"on {serving or 'no revision'}")
    return interrupt.Cancelled(done, not_done)


def _guarded(ctx: Context, name: str, prep, opts: Options, preparer: Preparer) -> Outcome:
    """One service's rollout; whatever goes wrong becomes its outcome, so the others carry on."""
    if isinstance(prep, errors.DeployctlError):
        ctx.progress(name, prep.message, "fail")
        return Outcome(name, FAILED, reason=prep.message, hint=prep.hint or "")
    try:
        return rollout(ctx, prep, opts, preparer)
    except errors.DeployctlError as e:
        ctx.progress(name, e.message, "fail")
        return Outcome(name, FAILED, plan=prep.plan, reason=e.message, hint=e.hint or "",
                       warnings=list(prep.warnings))
    except Exception as e:  # noqa: BLE001 - a bug in one service's rollout must not hide the others' results
        ctx.progress(name, f"unexpected error: {type(e).__name__}: {e}", "fail")
        return Outcome(name, FAILED, plan=prep.plan, reason=f"unexpected error: {type(e).__name__}")
