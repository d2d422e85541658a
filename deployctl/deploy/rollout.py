"""One service's rollout, as its plan says: migrate, then either create the new revision with no traffic under a
"candidate" tag or tag the retained revision the plan moves traffic to, gate it on its health paths through the
tag's own URL, and only then move all traffic to it, recording in the service that this revision passed the gate
(history.py). A failed gate leaves traffic where it was (the candidate tag dropped again, so the service is Ready
and the failed revision is not kept running for it); a failed revision's last log lines are shown, masked.
schedule.py runs the rollouts of a deploy (concurrently, `depends_on` first).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from deployctl import errors, redact
from deployctl.cloud.run import ContainerSpec, RunServices, Service, TrafficTarget
from deployctl.context import Context
from deployctl.deploy import gate as gate_mod
from deployctl.deploy import history, migrations
from deployctl.deploy.plan import UNCHANGED, ServicePlan
from deployctl.deploy.prepare import Prepared, Preparer
from deployctl.printable import printable

CANDIDATE_TAG = "candidate"
DEPLOYED, UNCHANGED_, FAILED, SKIPPED, PLANNED = "deployed", "unchanged", "failed", "skipped", "planned"
LOG_LINES = 15


@dataclass
class Options:
    dry_run: bool = False
    migrate: bool = True
    successes: int = gate_mod.DEFAULT_SUCCESSES
    gate_deadline: float = gate_mod.DEFAULT_DEADLINE
    force: bool = False  # move traffic to a rolled-back / verify-failed revision when the plan would
    # deploy --verify: runs once the rollouts of a wave have moved traffic; updates their outcomes in place.
    verify: Callable[[Context, list[Outcome]], None] | None = None
    # service -> the revision whose traffic shift has been sent (an interrupt after that may have moved it)
    shifting: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    service: str
    status: str  # deployed | unchanged | failed | skipped | planned
    plan: ServicePlan | None = None
    revision: str | None = None  # the revision serving after this run (or the candidate that failed)
    previous: list[str] = field(default_factory=list)  # what served before
    previous_traffic: list[TrafficTarget] = field(default_factory=list)  # its split, to move traffic back
    url: str | None = None
    reason: str = ""
    hint: str = ""  # the next step of the error that failed it (e.g. a migration's: deployctl doctor SERVICE)
    migrations: str = ""
    failed_probe: str | None = None
    logs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verify: str = ""  # deploy --verify: what the checks said about this service
    verify_failed: bool = False
    etag: str = ""  # of the service as this run left it (moving traffic back is guarded by it)
    generation: int = 0

    @property
    def moved_traffic(self) -> bool:
        """This run moved the traffic to a revision that did not have it (what verify can move back)."""
        return self.status == DEPLOYED and bool(self.revision) and self.previous != [self.revision]


def rollout(ctx: Context, prep: Prepared, opts: Options, preparer: Preparer) -> Outcome:
    if prep.desired.unresolved:  # a referenced service was created in this run: its URL is known now
        warnings = prep.warnings
        prep = preparer.one(prep.desired.name)
        prep.warnings = warnings
        if prep.desired.unresolved:
            names = ", ".join(prep.desired.unresolved)
            raise errors.CloudError(f"service {prep.desired.name}: its env uses the URL of {names}, which is not "
                                    "deployed", hint=f"deploy {names} first (`deployctl deploy {names}`)",
                                    code="dependency-missing")
    name, want, p, live = prep.desired.name, prep.desired, prep.plan, prep.service
    run = RunServices(ctx.clients, ctx.project, ctx.region)
    previous = [TrafficTarget(percent=t.percent, revision=t.revision) for t in (live.traffic if live else [])
                if t.percent and t.revision]
    broken = [t.revision for t in previous if not (prep.live and prep.live.revisions.get(t.revision)
                                                   and prep.live.revisions[t.revision].ready)]
    if broken:  # traffic cannot stay on a revision that never became Ready (nor can a rollout name it)
        ctx.progress(name, f"serving {', '.join(broken)} is not ready: the new revision takes all the traffic "
                           "once it passes", "warn")
        previous = []
    out = Outcome(name, FAILED, plan=p, previous=[t.revision for t in previous], previous_traffic=previous,
                  warnings=list(prep.warnings))
    for warning in prep.warnings:
        ctx.progress(name, warning, "warn")
    if p.blocked:
        raise errors.UsageError(p.blocked, code="deploy-blocked",
                                hint="change the config (that makes a new revision), choose the revision "
                                     f"deliberately with `deployctl rollback {name} --to REVISION`, or pass --force")
    if p.action == UNCHANGED:
        ctx.progress(name, f"unchanged (serving {', '.join(out.previous)})", "ok")
        return replace(out, status=UNCHANGED_, revision=p.serving, url=live.uri if live else None)
    how = "new revision" if p.new_revision else f"traffic to {p.target}" if p.target else "no new revision"
    ctx.progress(name, f"plan: {p.action}, {len(p.changes)} field(s) changed, {how}"
                       + (f" ({p.reason})" if p.reason else ""))
    if opts.migrate:
        m = migrations.run_pending(ctx, name)
        out.migrations = m.message
        ctx.progress(name, f"migrations: {m.message}", "ok" if m.ran else "info")
    else:
        out.migrations = "skipped (--no-migrate)"
        ctx.progress(name, "migrations: skipped (--no-migrate)")
    deadline = ctx.config.environment.deploy_timeout
    if p.new_revision:
        rev_id = _revision_id(name, want.digest)
        candidate = TrafficTarget(percent=0 if previous else 100, revision=rev_id, tag=CANDIDATE_TAG)
        ctx.progress(name, f"creating revision {rev_id} " + (
            f"(no traffic; serving stays on {', '.join(out.previous)})" if previous else
            "(the service's only revision: it receives the service URL's traffic once it starts)"))
        try:
            # The etag we planned against: if another deploy changed the service since, Cloud Run answers
            # ABORTED (a Conflict) instead of silently replacing that deploy's revision and traffic.
            # A planned create always creates: a service someone created since is a Conflict, never replaced.
            with _conflicts_explained(name):
                svc = run.deploy(name, replace(want.spec, revision=rev_id), traffic=previous + [candidate],
                                 etag=live.etag if live else None, create=live is None, deadline=deadline)
        except errors.CloudError as e:
            if e.code != "revision-failed":
                raise
            return _failed(ctx, run, out, rev_id, f"revision {rev_id} did not start", None, want.spec, live is None)
    elif p.target:
        rev_id = p.target
        ctx.progress(name, f"gating retained revision {rev_id} (no new revision; serving stays on "
                           f"{', '.join(out.previous) or 'nothing'} until it passes)")
        try:
            with _conflicts_explained(name):
                candidate = TrafficTarget(percent=0 if previous else 100, revision=rev_id, tag=CANDIDATE_TAG)
                svc = run.set_traffic(name, previous + [candidate], etag=live.etag, deadline=deadline)
        except errors.CloudError as e:  # scaled to zero, it starts again first: that can fail
            if e.code != "revision-failed":
                raise
            return _failed(ctx, run, out, rev_id, f"retained revision {rev_id} could not start", None,
                           prep.live.spec_of(rev_id) if prep.live else None, False)
    else:  # migrations only: the serving revision already runs this config and passed its gate
        ctx.progress(name, f"serving {p.serving} unchanged (it already runs this config)", "ok")
        return replace(out, status=DEPLOYED, revision=p.serving, url=live.uri if live else None)
    out.revision = rev_id
    url = next((t.uri for t in svc.traffic if t.tag == CANDIDATE_TAG and t.uri), None)
    if url is None:
        raise errors.CloudError(f"service {name}: the candidate revision has no tag URL to probe",
                                hint="check the service's traffic tags", code="no-tag-url")
    ctx.progress(name, f"health gate: {opts.successes} consecutive 200s from {', '.join(want.health)} "
                       f"within {opts.gate_deadline:g}s", detail=True)
    result = gate_mod.gate(url, want.health, successes=opts.successes, deadline=opts.gate_deadline)
    if not result.passed:
        return _failed(ctx, run, out, rev_id, f"health gate failed after {result.elapsed:.1f}s", result.failure,
                       want.spec, live is None)
    ctx.progress(name, f"health gate passed ({result.elapsed:.1f}s)", "ok")
    opts.shifting[name] = rev_id  # from here, an interrupt or a timeout may land after the shift was accepted
    try:
        svc = _shift_traffic(run, name, rev_id, svc, deadline)
    except errors.CloudError as e:
        if not (isinstance(e, errors.Unreachable) or e.code == "timeout"):
            raise  # an answer that refused the change (a conflict, a permission): nothing moved
        return _unconfirmed(ctx, run, out, rev_id, e)
    ctx.progress(name, f"deployed {rev_id}: 100% of traffic ({svc.uri})", "ok")
    return replace(out, status=DEPLOYED, url=svc.uri, etag=svc.etag, generation=svc.generation)


def _unconfirmed(ctx: Context, run: RunServices, out: Outcome, rev_id: str, e: errors.DeployctlError) -> Outcome:
    """The traffic shift was sent, and then its answer did not come (a timeout, a lost reply): it may have
    happened. Say what serves now, read again, rather than "traffic stays"."""
    try:
        now = ", ".join(run.get(out.service).serving) or "no revision"
    except errors.DeployctlError:
        now = "unknown (the service could not be read again)"
    out.reason = (f"the traffic shift to {rev_id} was sent but not confirmed ({e.message}); traffic may have moved "
                  f"to it: serving now: {now}; check `deployctl status {out.service}`")
    ctx.progress(out.service, out.reason, "fail")
    return out


def _revision_id(service: str, digest: str) -> str:
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    return f"{service}-{digest[:6]}-{suffix}"


def _shift_traffic(run: RunServices, name: str, rev_id: str, svc: Service, deadline: float) -> Service:
    """All traffic to our candidate (recording that it passed the gate), only if nobody deployed over it
    meanwhile (the etag guards that).

    An etag also changes when Cloud Run updates the service's status rather than its spec (conditions,
    traffic statuses). That is not another deploy: when the generation is still the one our rollout made and
    our candidate is still the latest revision, retry once against the fresh etag."""
    target = [TrafficTarget(percent=100, revision=rev_id)]
    notes = history.after_gate(svc, rev_id)
    try:
        with _conflicts_explained(name):
            return run.set_traffic(name, target, etag=svc.etag, deadline=deadline, annotations=notes)
    except errors.Conflict:
        fresh = run.get(name)
        if fresh.generation != svc.generation or fresh.latest_created != svc.latest_created:
            raise
    with _conflicts_explained(name):
        return run.set_traffic(name, target, etag=fresh.etag, deadline=deadline, annotations=notes)


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


def _failed(ctx: Context, run: RunServices, out: Outcome, rev_id: str, why: str, probe, spec: ContainerSpec | None,
            created: bool) -> Outcome:
    out.revision = rev_id
    if out.previous:
        out.reason = f"{why}; traffic stays on {', '.join(out.previous)}" + _drop_candidate(run, out, rev_id)
    elif probe is None:  # it never started, and nothing ready served before it
        out.reason = f"{why}; {'the service was created, and' if created else 'no revision of it is ready:'} its " \
                     "URL serves nothing"
    elif created:  # Cloud Run routes all of a service's traffic somewhere: with one revision, to that one
        out.reason = (f"{why}; the service was created and its only revision {rev_id} serves its URL (there was "
                      "no earlier revision to keep the traffic on)")
    else:
        out.reason = f"{why}; no earlier revision was ready, so {rev_id} serves the service's URL"
    out.failed_probe = probe.describe() if probe else None
    ctx.progress(out.service, out.reason + (f" ({out.failed_probe})" if probe else ""), "fail")
    out.logs = revision_logs(ctx, out.service, rev_id, spec)
    for line in out.logs:
        ctx.progress(out.service, f"  | {line}", "fail")
    return out


def _drop_candidate(run: RunServices, out: Outcome, rev_id: str) -> str:
    """Traffic back to exactly what served before: the candidate tag goes (a traffic-only update, which also
    reconciles the service to Ready and lets the failed revision scale to zero). Only while the service still
    routes as this run left it; returns a note when that could not be done."""
    try:
        fresh = run.get(out.service)
        ours = any(t.tag == CANDIDATE_TAG and t.revision == rev_id for t in fresh.traffic)
        if ours and sorted(fresh.serving) == sorted(out.previous):
            run.set_traffic(out.service, out.previous_traffic, etag=fresh.etag)
    except errors.DeployctlError as e:
        return f" (its {CANDIDATE_TAG} tag is left on {rev_id}: {e.message})"
    return ""


def revision_logs(ctx: Context, service: str, revision: str, spec: ContainerSpec | None = None,
                  limit: int = LOG_LINES) -> list[str]:
    """The revision's last log lines, masked: the secret values it was given are read and registered first (a
    service may print its own secrets), and withheld if one cannot be read."""
    from deployctl.cloud.logs import service_filter, tail

    if spec is not None and (why := register_pinned_secrets(ctx, spec)):
        return [f"(log lines withheld: {why})"]
    try:
        lines = tail(ctx.clients, ctx.project, service_filter(service, revision=revision), limit=limit)
    except errors.DeployctlError as e:
        return [f"(logs unavailable: {e.message})"]
    return [printable(redact.redact(f"{line.severity}: {line.text}"), newlines=False) for line in lines]


def register_pinned_secrets(ctx: Context, spec: ContainerSpec) -> str | None:
    """Read every secret version `spec` pins into its env (the pieces of a DATABASE_URL too) and register them
    with redact. Returns why not, when one cannot be read (its value could then not be masked)."""
    from deployctl import dbtarget
    from deployctl.cloud.secrets import SecretStore

    store = SecretStore(ctx.clients, ctx.project)
    for env_name, ref in spec.secrets.items():
        secret_id, _, version = ref.partition(":")
        try:
            value = store.access(secret_id, version or "latest")  # registers the value
        except errors.DeployctlError as e:
            return f"secret {secret_id} (version {version or 'latest'}, in {env_name}) could not be read to mask " \
                   f"it: {e.message}"
        if env_name == "DATABASE_URL":
            dbtarget.register_url(value.text)  # its password and the pieces a parser may cut it into
    return None
