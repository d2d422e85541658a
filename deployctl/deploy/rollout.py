"""Rolling out services: plan every one, then per service (independent ones concurrently, `depends_on` first)
migrate, create the new revision with no traffic under a "candidate" tag, gate it on its health paths through
the tag's own URL, and only then move traffic to it. A failed gate leaves traffic where it was."""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from deployctl import errors, interrupt, redact
from deployctl.cloud.run import RunServices, Service, TrafficTarget
from deployctl.context import Context
from deployctl.deploy import desired as desired_mod
from deployctl.deploy import gate as gate_mod
from deployctl.deploy import migrations
from deployctl.deploy.plan import UNCHANGED, ServicePlan, plan

CANDIDATE_TAG = "candidate"
DEPLOYED, UNCHANGED_, FAILED, SKIPPED, PLANNED = "deployed", "unchanged", "failed", "skipped", "planned"
MAX_PARALLEL = 8
LOG_LINES = 15


@dataclass
class Options:
    dry_run: bool = False
    migrate: bool = True
    successes: int = gate_mod.DEFAULT_SUCCESSES
    gate_deadline: float = gate_mod.DEFAULT_DEADLINE
    # Runs after traffic moved (deploy --verify): returns None, or why it failed after moving traffic back.
    after_traffic: Callable[[Context, str, list[TrafficTarget]], str | None] | None = None


@dataclass
class Outcome:
    service: str
    status: str  # deployed | unchanged | failed | skipped | planned
    plan: ServicePlan | None = None
    revision: str | None = None  # the revision serving after this run (or the candidate that failed)
    previous: list[str] = field(default_factory=list)  # what served before
    url: str | None = None
    reason: str = ""
    migrations: str = ""
    failed_probe: str | None = None
    logs: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    desired: desired_mod.DesiredService
    live: Service | None
    plan: ServicePlan


def prepare(ctx: Context, names: list[str]) -> dict[str, Prepared | errors.DeployctlError]:
    """The desired state and plan of every service (concurrently: each is a few reads)."""
    run = RunServices(ctx.clients, ctx.project, ctx.region)
    pinner = desired_mod.SecretPinner(ctx)

    def one(name: str) -> Prepared:
        want = desired_mod.build(ctx, name, pinner)
        live = run.find(name)
        return Prepared(want, live, plan(want, live))

    out: dict[str, Prepared | errors.DeployctlError] = {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(names) or 1)) as pool:
        futures = {n: pool.submit(one, n) for n in names}
        for name, fut in futures.items():
            try:
                out[name] = fut.result()
            except errors.ConfigError:
                raise
            except errors.DeployctlError as e:
                out[name] = e
    return out


def deploy_all(ctx: Context, names: list[str], opts: Options) -> list[Outcome]:
    ctx.config, ctx.clients  # noqa: B018 - load once, before threads race to build them
    prepared = prepare(ctx, names)
    if opts.dry_run:
        return [Outcome(n, FAILED, reason=p.message) if isinstance(p, errors.DeployctlError)
                else Outcome(n, PLANNED if p.plan.pending else UNCHANGED_, plan=p.plan,
                             previous=p.live.serving if p.live else []) for n, p in prepared.items()]
    selected = set(names)
    deps = {n: [d for d in ctx.config.services[n].depends_on if d in selected] for n in names}
    outcomes: dict[str, Outcome] = {}
    running: dict[Future, str] = {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(names) or 1)) as pool:
        try:
            while len(outcomes) < len(names):
                for name in names:
                    if name in outcomes or name in running.values():
                        continue
                    if any(outcomes.get(d) and outcomes[d].status in (FAILED, SKIPPED) for d in deps[name]):
                        bad = [d for d in deps[name]
                               if outcomes.get(d) and outcomes[d].status in (FAILED, SKIPPED)]
                        outcomes[name] = Outcome(name, SKIPPED, reason=f"dependency failed: {', '.join(bad)}")
                        ctx.progress(name, outcomes[name].reason, "skip")
                    elif all(d in outcomes for d in deps[name]):
                        running[pool.submit(_guarded, ctx, name, prepared[name], opts)] = name
                if not running:
                    continue
                # A timeout keeps the main thread, where Ctrl-C lands, returning to Python regularly.
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    outcomes[running.pop(fut)] = fut.result()
        except KeyboardInterrupt:
            raise _interrupted(names, prepared, outcomes, running) from None
    return [outcomes[n] for n in names]


def _interrupted(names: list[str], prepared: dict, outcomes: dict[str, Outcome],
                 running: dict[Future, str]) -> interrupt.Cancelled:
    """Ctrl-C: stop the workers at their next wait (within about a second) and say what was done and what not."""
    interrupt.request()
    wait(list(running), timeout=1.2)
    done = [f"{o.service} {o.status}" + (f" ({o.revision})" if o.revision else "") for o in outcomes.values()]
    not_done = []
    for name in names:
        if name in outcomes:
            continue
        live = getattr(prepared.get(name), "live", None)
        serving = ", ".join(live.serving) if live else ""
        started = name in running.values()
        not_done.append(f"{name} {'stopped before moving traffic' if started else 'not started'}; serving stays "
                        f"on {serving or 'no revision'}")
    return interrupt.Cancelled(done, not_done)


def _guarded(ctx: Context, name: str, prep, opts: Options) -> Outcome:
    """One service's rollout; whatever goes wrong becomes its outcome, so the others carry on."""
    if isinstance(prep, errors.DeployctlError):
        ctx.progress(name, prep.message, "fail")
        return Outcome(name, FAILED, reason=prep.message)
    try:
        return rollout(ctx, prep, opts)
    except errors.DeployctlError as e:
        ctx.progress(name, e.message, "fail")
        return Outcome(name, FAILED, plan=prep.plan, reason=e.message)
    except Exception as e:  # noqa: BLE001 - a bug in one service's rollout must not hide the others' results
        ctx.progress(name, f"unexpected error: {type(e).__name__}: {e}", "fail")
        return Outcome(name, FAILED, plan=prep.plan, reason=f"unexpected error: {type(e).__name__}")


def _revision_id(service: str, digest: str) -> str:
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    return f"{service}-{digest[:6]}-{suffix}"


def rollout(ctx: Context, prep: Prepared, opts: Options) -> Outcome:
    name, want, live, p = prep.desired.name, prep.desired, prep.live, prep.plan
    run = RunServices(ctx.clients, ctx.project, ctx.region)
    previous = [TrafficTarget(percent=t.percent, revision=t.revision) for t in (live.traffic if live else [])
                if t.percent and t.revision]
    out = Outcome(name, FAILED, plan=p, previous=[t.revision for t in previous])
    if p.action == UNCHANGED:
        ctx.progress(name, f"unchanged (serving {', '.join(out.previous)})", "ok")
        return replace(out, status=UNCHANGED_, revision=out.previous[0] if out.previous else None,
                       url=live.uri if live else None)
    ctx.progress(name, f"plan: {p.action}, {len(p.changes)} field(s) changed" + (f" ({p.reason})" if p.reason
                                                                               else ""))
    if opts.migrate:
        m = migrations.run_pending(ctx, name)
        out.migrations = m.message
        ctx.progress(name, f"migrations: {m.message}", "ok" if m.ran else "info")
    else:
        out.migrations = "skipped (--no-migrate)"
        ctx.progress(name, "migrations: skipped (--no-migrate)")
    deadline = ctx.config.environment.deploy_timeout
    if p.changes or live is None or not live.latest_created:
        rev_id = _revision_id(name, want.digest)
        candidate = TrafficTarget(percent=0 if previous else 100, revision=rev_id, tag=CANDIDATE_TAG)
        ctx.progress(name, f"creating revision {rev_id} (no traffic; serving stays on "
                           f"{', '.join(out.previous) or 'nothing yet'})")
        try:
            # The etag we planned against: if another deploy changed the service since, Cloud Run answers
            # ABORTED (a Conflict) instead of silently replacing that deploy's revision and traffic.
            with _conflicts_explained(name):
                svc = run.deploy(name, replace(want.spec, revision=rev_id), traffic=previous + [candidate],
                                 etag=live.etag if live else None, deadline=deadline)
        except errors.CloudError as e:
            if e.code != "revision-failed":
                raise
            return _failed(ctx, out, rev_id, f"revision {rev_id} did not start", None)
    else:  # same template, not serving: gate the latest revision again (Cloud Run makes no new one)
        rev_id = live.latest_created
        if not run.revision(name, rev_id).ready:
            raise errors.CloudError(f"service {name}: its latest revision {rev_id} is not ready and the config "
                                    "has not changed since it was made",
                                    hint="fix the cause shown by `deployctl status`, then deploy again",
                                    code="revision-failed")
        with _conflicts_explained(name):
            svc = run.set_traffic(name, previous + [TrafficTarget(percent=0, revision=rev_id, tag=CANDIDATE_TAG)],
                                  etag=live.etag, deadline=deadline)
    out.revision = rev_id
    url = next((t.uri for t in svc.traffic if t.tag == CANDIDATE_TAG and t.uri), None)
    if url is None:
        raise errors.CloudError(f"service {name}: the candidate revision has no tag URL to probe",
                                hint="check the service's traffic tags", code="no-tag-url")
    ctx.progress(name, f"health gate: {opts.successes} consecutive 200s from {', '.join(want.health)} "
                       f"within {opts.gate_deadline:g}s", detail=True)
    result = gate_mod.gate(url, want.health, successes=opts.successes, deadline=opts.gate_deadline)
    if not result.passed:
        return _failed(ctx, out, rev_id, f"health gate failed after {result.elapsed:.1f}s", result.failure)
    ctx.progress(name, f"health gate passed ({result.elapsed:.1f}s)", "ok")
    svc = _shift_traffic(run, name, rev_id, svc, deadline)
    ctx.progress(name, f"deployed {rev_id}: 100% of traffic ({svc.uri})", "ok")
    if opts.after_traffic and (why := opts.after_traffic(ctx, name, previous)):
        return replace(out, reason=why, url=svc.uri)  # status stays FAILED
    return replace(out, status=DEPLOYED, url=svc.uri)


def _shift_traffic(run: RunServices, name: str, rev_id: str, svc: Service, deadline: float) -> Service:
    """All traffic to our candidate, only if nobody deployed over it meanwhile (the etag guards that).

    An etag also changes when Cloud Run updates the service's status rather than its spec (conditions,
    traffic statuses). That is not another deploy: when the generation is still the one our rollout made and
    our candidate is still the latest revision, retry once against the fresh etag."""
    target = [TrafficTarget(percent=100, revision=rev_id)]
    try:
        with _conflicts_explained(name):
            return run.set_traffic(name, target, etag=svc.etag, deadline=deadline)
    except errors.Conflict:
        fresh = run.get(name)
        if fresh.generation != svc.generation or fresh.latest_created != rev_id:
            raise
    with _conflicts_explained(name):
        return run.set_traffic(name, target, etag=fresh.etag, deadline=deadline)


@contextmanager
def _conflicts_explained(name: str) -> Iterator[None]:
    """A stale etag (or a create racing a create) becomes one clear conflict: never a silent lost update."""
    try:
        yield
    except (errors.Conflict, errors.AlreadyExists) as e:
        raise errors.Conflict(
            f"service {name}: conflict: another deploy changed it while this one ran; this run stopped before "
            "touching that deploy's revision or traffic",
            hint="check what serves now with `deployctl status`, then deploy again (it plans against it)",
            details=e.details) from e


def _failed(ctx: Context, out: Outcome, rev_id: str, why: str, probe) -> Outcome:
    where = ", ".join(out.previous) or "no revision"
    out.revision = rev_id
    out.reason = f"{why}; traffic stays on {where}"
    out.failed_probe = probe.describe() if probe else None
    ctx.progress(out.service, out.reason + (f" ({out.failed_probe})" if probe else ""), "fail")
    out.logs = revision_logs(ctx, out.service, rev_id)
    for line in out.logs:
        ctx.progress(out.service, f"  | {line}", "fail")
    return out


def revision_logs(ctx: Context, service: str, revision: str, limit: int = LOG_LINES) -> list[str]:
    from deployctl.cloud.logs import service_filter, tail

    try:
        lines = tail(ctx.clients, ctx.project, service_filter(service, revision=revision), limit=limit)
    except errors.DeployctlError as e:
        return [f"(logs unavailable: {e.message})"]
    return [redact.redact(f"{line.severity}: {line.text}") for line in lines]
