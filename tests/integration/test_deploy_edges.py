"""Deploy, rollback and `deploy --verify` on their edge paths, through deployctl's own commands in this process
(a Context pointed at the session's in-process local cloud), so each costs no CLI start-up: a rollback or a
gated retained revision that cannot start again, two first deploys of one service at once, a traffic shift whose
reply is lost, and moving traffic back after someone else changed the service.

Services run tests/fixtures/run_app.py; names are prefixed "edges-" in a project of their own.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from deployctl import errors
from deployctl.cloud.run import RunServices, TrafficTarget
from deployctl.cloud.secrets import SecretStore
from deployctl.context import Context
from deployctl.deploy import history
from deployctl.deploy.rollout import DEPLOYED, FAILED, Options, Outcome
from deployctl.deploy.schedule import deploy_all

PROJECT = "deploy-edges"
HEADER = f"""
[environment]
project = "{PROJECT}"
region = "us-central1"
emulator = true
"""


def service(name: str, *, env: str = 'V = "a"', secrets_: str = "{}", extra: str = "") -> str:
    return f"""
[services.{name}]
image = "local/{name}:dev"
command = ["python", "tests/fixtures/run_app.py"]
env = {{ {env} }}
secrets = {secrets_}
health = ["/health"]
startup_probe = {{ path = "/health", period = 1, failure_threshold = 10 }}
{extra}
"""


class Cloud:
    """Contexts on the session's emulator, each with its own config directory and recorded progress."""

    def __init__(self, emulator, base: Path) -> None:
        self.emulator = emulator
        self.base = base
        self.contexts: list[Context] = []

    def ctx(self, *services: str, when: tuple[str, Callable[[], None]] | None = None) -> Context:
        """`when` = (text, action): the action runs as progress containing the text is reported (in the rollout's
        own thread, before its next step)."""
        config_dir = self.base / f"cfg-{len(self.contexts)}"
        config_dir.mkdir()
        (config_dir / "local.toml").write_text(HEADER + "".join(services))
        events: list[str] = []

        def on_event(e) -> None:
            events.append(f"{e.subject}: {e.message}")
            if when and when[0] in e.message:
                when[1]()

        ctx = Context(config_dir=config_dir, on_event=on_event)
        ctx.events = events  # type: ignore[attr-defined]
        self.contexts.append(ctx)
        return ctx

    def faults(self, faults: dict | None) -> None:
        path = self.emulator.state_dir / "faults.json"
        if faults is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(json.dumps(faults))


@pytest.fixture(scope="module")
def cloud(emulator, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DEPLOYCTL_EMULATOR_HOST", emulator.address)
    mp.setenv("DEPLOYCTL_SQLADMIN_ENDPOINT", emulator.rest_address)
    mp.setenv("DEPLOYCTL_STATE_DIR", str(tmp_path_factory.mktemp("edges-state")))
    c = Cloud(emulator, tmp_path_factory.mktemp("edges"))
    yield c
    c.faults(None)
    for ctx in c.contexts:
        if "clients" in ctx.__dict__:
            ctx.clients.close()
    mp.undo()


def deploy(ctx: Context, *names: str) -> list[Outcome]:
    return deploy_all(ctx, list(names), Options(successes=1, gate_deadline=5))


def run_of(ctx: Context) -> RunServices:
    return RunServices(ctx.clients, PROJECT, "us-central1")


def answering(url: str) -> str:
    with urllib.request.urlopen(url + "/env/K_REVISION", timeout=5) as r:
        return r.read().decode()


@pytest.fixture(scope="module")
def dep(cloud):
    """A deployed service others depend on."""
    ctx = cloud.ctx(service("edges-dep"))
    [out] = deploy(ctx, "edges-dep")
    assert out.status == DEPLOYED, out
    return ctx


def test_a_retained_revision_that_cannot_start_again_leaves_traffic_and_marks_where_they_were(cloud):
    """Retained revisions scaled to zero start again when traffic goes back to them; their pinned secret version
    was disabled meanwhile. Neither the deploy that gates one nor a rollback to one moves the traffic, marks the
    serving revision as rolled back, or leaves the stored routing on the revision that failed."""
    name = "edges-cold"
    setup = cloud.ctx()
    store = SecretStore(setup.clients, PROJECT)
    store.create_secret("edges-cold-key", exist_ok=True)
    versions = [store.add_version("edges-cold-key", f"{n}-{secrets.token_hex(4)}").number for n in ("one", "two")]
    ids = []
    for v, key in (("a", versions[0]), ("b", versions[0]), ("c", versions[1]), ("d", versions[1])):
        ctx = cloud.ctx(service(name, env=f'V = "{v}"', secrets_=f'{{ KEY = "edges-cold-key:{key}" }}'))
        [out] = deploy(ctx, name)
        assert out.status == DEPLOYED, (out, ctx.events)
        ids.append(out.revision)
    a, b, c, d = ids
    run = run_of(setup)
    store.disable("edges-cold-key", versions[0])  # a and b (scaled to zero: only c is kept warm) cannot start

    # deploy of a's config: a retained revision already runs it; it is gated, and cannot start
    again = cloud.ctx(service(name, env='V = "a"', secrets_=f'{{ KEY = "edges-cold-key:{versions[0]}" }}'))
    [out] = deploy(again, name)
    assert out.status == FAILED and out.plan.target == a, out
    assert out.reason.startswith(f"retained revision {a} could not start; traffic stays on {d}"), out.reason
    assert any("log lines withheld" in line for line in out.logs), out.logs  # its secret cannot be read to mask
    svc = run.get(name)
    assert svc.serving == [d] and svc.ready and not [t for t in svc.traffic if t.tag], svc.traffic

    # rollback to b: the same, through `deployctl rollback`
    from deployctl.commands.rollback import rollback

    with pytest.raises(errors.CloudError) as failed:
        rollback(again, name, to=b)
    assert failed.value.code == "revision-failed"
    assert f"rollback target {b} could not start; traffic stays on {d}" in failed.value.message
    assert "is not accessible" in failed.value.message  # why (the revision's condition), with no log lines
    svc = run.get(name)
    assert svc.serving == [d] and svc.ready, svc
    assert history.withdrawn(svc, d) is None  # what still serves is not marked as rolled back
    stored = setup.clients.services.get_service(name=svc.name, **setup.clients.policy.call())
    assert [(t.revision, t.percent) for t in stored.traffic] == [(d, 100)]  # what a restart routes by
    assert answering(svc.uri) == d

    # a rollback that works still marks what it moved away from, once the traffic has moved
    done = rollback(again, name, to=c)
    assert done.revision == c and done.warnings == []
    assert history.withdrawn(run.get(name), d) and answering(svc.uri) == c


def test_two_first_deploys_at_once_one_creates_the_other_conflicts(cloud, dep):
    """Both plan "create" (the service does not exist yet); the later one must not update the earlier one's
    service without an etag. GetService answers slowly (each read 2 s), so both plans are read before either
    creates, and the second create comes 0.35 s after the first (1.65 s of room for a slow machine)."""
    name = "edges-race"
    ctxs = [cloud.ctx(service("edges-dep"), service(name, env=f'V = "{v}"', extra='depends_on = ["edges-dep"]'))
            for v in "ab"]
    for ctx in ctxs:
        ctx.config, ctx.clients  # noqa: B018 - built before the race, as a CLI run has them before planning
    results: dict[int, list[Outcome]] = {}

    def one(i: int) -> None:
        results[i] = deploy(ctxs[i], name)

    cloud.faults({"latency_ms": {"GetService": 2000}})
    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        threads[0].start()
        time.sleep(0.35)
        threads[1].start()
        for t in threads:
            t.join(60)
    finally:
        cloud.faults(None)
    outs = [results[i][0] for i in range(2)]
    won = [o for o in outs if o.status == DEPLOYED]
    lost = [o for o in outs if o.status == FAILED]
    assert len(won) == 1 and len(lost) == 1, outs
    assert "conflict: another deploy changed it" in lost[0].reason, lost[0]
    loser_events = ctxs[outs.index(lost[0])].events
    assert not any("health gate" in e for e in loser_events), loser_events  # it stopped at the create
    run = run_of(dep)
    assert [r.id for r in run.revisions(name)] == [won[0].revision]  # nothing of the loser's was made
    assert run.get(name).serving == [won[0].revision]


def test_a_traffic_shift_whose_reply_is_lost_says_traffic_may_have_moved(cloud):
    """The shift's update is applied and its reply lost (from the moment the gate passed): the report says the
    shift was sent and may have moved the traffic (it did), not that traffic stays."""
    name = "edges-lost"
    [out] = deploy(cloud.ctx(service(name)), name)
    assert out.status == DEPLOYED
    old = out.revision
    lose_replies = {"drop_response_rate": 1.0, "drop_response_methods": ["UpdateService"]}
    ctx = cloud.ctx(service(name, env='V = "b"'), when=("health gate passed", lambda: cloud.faults(lose_replies)))
    try:
        [out] = deploy(ctx, name)
    finally:
        cloud.faults(None)
    assert out.status == FAILED and out.revision != old, (out, ctx.events)
    assert out.reason.startswith(f"the traffic shift to {out.revision} was sent but not confirmed"), out.reason
    assert "traffic may have moved to it" in out.reason and "stays" not in out.reason
    run = run_of(ctx)
    deadline = time.monotonic() + 10
    while run.get(name).serving != [out.revision]:  # it did move
        assert time.monotonic() < deadline, run.get(name).serving
        time.sleep(0.1)


def test_verify_does_not_move_back_a_service_someone_changed_meanwhile(dep):
    """deploy --verify moves traffic back only while the service is as this run left it (the shift's etag)."""
    from deployctl.verify.deploy_hook import _move_back

    run = run_of(dep)
    svc = run.get("edges-dep")
    [rev] = svc.serving

    def shifted() -> Outcome:  # as a rollout that moved the traffic to `rev` leaves it (the traffic it replaced)
        now = run.get("edges-dep")
        return Outcome("edges-dep", DEPLOYED, revision=rev, previous=["edges-dep-before"],
                       previous_traffic=[TrafficTarget(percent=100, revision=rev)], etag=now.etag,
                       generation=now.generation)

    mine = shifted()
    run.annotate("edges-dep", {"someone": "else"})  # another deploy or rollback, after this run's shift
    assert not _move_back(dep, mine, "verify failed: x/y: boom")
    assert "not moved back: the service changed meanwhile" in mine.reason, mine.reason
    assert history.VERIFY_FAILED not in run.get("edges-dep").annotations  # nothing was sent
    untouched = shifted()
    assert _move_back(dep, untouched, "verify failed: x/y: boom") and "traffic moved back" in untouched.reason
    assert history.VERIFY_FAILED in run.get("edges-dep").annotations


FLOW = """
[[checks]]
name = "edges-flow"

[[checks.steps]]
name = "mine"
service = "edges-verify"
path = "/health"

[[checks.steps]]
name = "theirs"
service = "edges-dep"
path = "/missing"
"""


def test_verify_leaves_a_change_in_place_when_a_failure_elsewhere_is_pre_existing(cloud, dep):
    """A step on a service this run did not change fails; the changed service of that flow is moved back and the
    flow run again: it still fails, so the change is moved forward again (not blamed), and the run says so."""
    from deployctl.verify.deploy_hook import verify_wave

    name = "edges-verify"
    [first] = deploy(cloud.ctx(service(name)), name)
    assert first.status == DEPLOYED
    ctx = cloud.ctx(service("edges-dep"), service(name, env='V = "b"'), FLOW)
    [out] = deploy_all(ctx, [name], Options(successes=1, gate_deadline=5, verify=verify_wave))
    assert out.status == DEPLOYED and out.verify_failed, (out, ctx.events)
    assert "pre-existing, not caused by this deploy" in out.verify and "got 404" in out.verify, out.verify
    assert any(f"traffic moved back to {first.revision}" in e for e in ctx.events), ctx.events  # it was tried
    svc = run_of(ctx).get(name)
    assert svc.serving == [out.revision] != [first.revision]
    assert history.withdrawn(svc, out.revision) is None  # not marked as failed verify


def test_rollback_of_a_service_never_deployed_says_to_deploy_it(cloud):
    """It said '.../services/edges-never was not found: Service ... not found' with 'check the name, or create it'
    (the name is right: it is in the config; there is nothing to roll back)."""
    from deployctl.commands.rollback import rollback

    ctx = cloud.ctx(service("edges-never"))
    with pytest.raises(errors.NotFound) as e:
        rollback(ctx, "edges-never")
    assert e.value.message == "service edges-never is not deployed in local: there is nothing to roll back"
    assert e.value.hint == "deploy it first: deployctl deploy edges-never"
