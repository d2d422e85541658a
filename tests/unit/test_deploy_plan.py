"""The deploy's decisions without a cloud: the plan against what serves (plan.py), the deploy history and the
rollback target (history.py), the depends_on waves (schedule.py), and the health gate (gate.py) against a real
HTTP server on loopback."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deployctl.cloud.run import ContainerSpec, Revision, Service, TrafficTarget
from deployctl.deploy import gate, history
from deployctl.deploy.desired import DIGEST_LABEL, VERSION_LABEL, DesiredService, spec_digest
from deployctl.deploy.migrations import MigrationStatus
from deployctl.deploy.plan import CREATE, UNCHANGED, UPDATE, Live, diff, plan
from deployctl.deploy.schedule import waves
from deployctl.errors import UsageError

BASE = ContainerSpec(image="img:1", env={"LOG_LEVEL": "info"}, secrets={"K": "k:3"}, startup_path="/health",
                     cpu="1", memory="512Mi")


def desired(spec: ContainerSpec = BASE, version: str = "1-0") -> DesiredService:
    digest = spec_digest(spec)
    return DesiredService(name="svc", spec=replace(spec, labels={VERSION_LABEL: version, DIGEST_LABEL: digest}),
                          health=["/health"], depends_on=[], has_database=False, digest=digest)


def revision(rev_id: str, generation: int, spec: ContainerSpec = BASE, *, ready: bool = True) -> Revision:
    labels = {VERSION_LABEL: "1-0", DIGEST_LABEL: spec_digest(spec)}
    return Revision(name=rev_id, id=rev_id, service="svc", generation=generation, ready=ready, ready_message="",
                    create_time=None, image=spec.image, env=spec.env, secrets=spec.secrets, command=[], args=[],
                    labels=labels, spec=replace(spec, labels=labels))


def live(revisions: list[Revision], traffic: dict[str, int], annotations: dict[str, str] | None = None,
         ingress: str = "all") -> Live:
    latest = max(revisions, key=lambda r: r.generation)
    svc = Service(name="svc", id="svc", uri="http://svc", generation=latest.generation, observed_generation=1,
                  etag="e", latest_ready=latest.id, latest_created=latest.id, ready=True, ready_message="",
                  reconciling=False, traffic=[TrafficTarget(percent=p, revision=r) for r, p in traffic.items()],
                  labels={}, image="", template_env={}, template_secrets={}, spec=latest.spec,
                  annotations=annotations or {}, ingress=ingress)
    return Live(svc, {r.id: r for r in revisions})


def test_diff_names_each_field_and_ignores_the_version_label():
    want = desired(replace(BASE, cpu="2", memory="1Gi", ingress="internal", probe_timeout=3), version="2-0")
    have = replace(BASE, labels={VERSION_LABEL: "1-0", DIGEST_LABEL: spec_digest(BASE)})
    fields = {c.field: (c.before, c.after) for c in diff(want.spec, have)}
    assert fields.pop("labels.deployctl-config") == (spec_digest(BASE), want.digest)
    assert fields == {"cpu": ("1", "2"), "memory": ("512Mi", "1Gi"), "ingress": ("all", "internal"),
                      "probe_timeout": (1, 3)}
    assert diff(desired(version="9-9").spec, have) == []  # a tool upgrade alone is not a change


def test_create_and_unchanged_only_when_the_serving_revision_passed_the_gate():
    assert plan(desired(), None).action == CREATE
    a = revision("svc-a", 1)
    gated = live([a], {"svc-a": 100}, {history.GATED: "svc-a"})
    assert plan(desired(), gated).action == UNCHANGED
    never = plan(desired(), live([a], {"svc-a": 100}))  # e.g. a first create whose gate failed
    assert never.action == UPDATE and never.target == "svc-a" and not never.new_revision
    assert "never passed" in never.reason
    broken = plan(desired(), live([revision("svc-a", 1, ready=False)], {"svc-a": 100}))
    assert broken.action == UPDATE and broken.new_revision


def test_plan_against_the_serving_revision_after_a_rollback():
    a, b = revision("svc-a", 1), revision("svc-b", 2, replace(BASE, env={"LOG_LEVEL": "debug"}))
    rolled_back = live([a, b], {"svc-a": 100}, {history.GATED: "svc-b,svc-a", history.ROLLED_BACK: "svc-b"})
    assert plan(desired(), rolled_back).action == UNCHANGED  # a serves the config: no invented change
    debug = desired(replace(BASE, env={"LOG_LEVEL": "debug"}))
    p = plan(debug, rolled_back)
    assert p.target == "svc-b" and not p.new_revision  # b already runs it: no duplicate revision
    assert p.blocked.startswith("would undo the rollback of svc-b (rolled back with `deployctl rollback`)")
    forced = plan(debug, rolled_back, force=True)
    assert forced.target == "svc-b" and not forced.blocked and "--force" in forced.reason
    other = plan(desired(replace(BASE, image="img:2")), rolled_back)
    assert other.new_revision and other.target is None and not other.blocked
    verify_failed = live([a, b], {"svc-a": 100}, {history.GATED: "svc-a", history.VERIFY_FAILED: "svc-b"})
    assert "failed `deploy --verify`" in plan(debug, verify_failed).blocked


def test_an_ingress_change_is_a_new_revision_even_with_a_matching_retained_one():
    a, b = revision("svc-a", 1), revision("svc-b", 2, replace(BASE, env={"LOG_LEVEL": "debug"}))
    notes = {history.GATED: "svc-a,svc-b"}
    p = plan(desired(replace(BASE, env={"LOG_LEVEL": "debug"}, ingress="internal")),
             live([a, b], {"svc-a": 100}, notes))
    assert p.new_revision and any(c.field == "ingress" for c in p.changes)


def test_pending_or_unknown_migrations_make_an_otherwise_unchanged_service_an_update():
    gated = live([revision("svc-a", 1)], {"svc-a": 100}, {history.GATED: "svc-a"})
    pending = MigrationStatus("pending", ["aaa"], ["bbb"], ["bbb"])
    p = plan(desired(), gated, pending)
    assert p.action == UPDATE and p.migrate and not p.new_revision and p.target is None
    assert p.migrations == "aaa → bbb (1 pending)"
    assert plan(desired(), gated, MigrationStatus("unknown", reason="timeout")).migrate
    assert plan(desired(), gated, MigrationStatus("at-head", ["bbb"], ["bbb"])).action == UNCHANGED


def test_history_and_rollback_target():
    revs = [revision(r, g) for r, g in (("svc-a", 1), ("svc-b", 2), ("svc-c", 3), ("svc-d", 4))]
    revs[2] = replace(revs[2], ready=False)
    svc = live(revs, {"svc-d": 100}, {history.GATED: "svc-d,svc-a"}).service
    # c is not ready, b never passed the gate: a is the last known-good revision
    assert history.rollback_target(svc, revs).id == "svc-a"
    notes = history.after_rollback(svc, ["svc-d"], "svc-a")
    assert notes == {history.ROLLED_BACK: "svc-d"}
    svc = replace(svc, annotations={**svc.annotations, **notes}, traffic=[TrafficTarget(100, "svc-a")])
    with pytest.raises(UsageError, match="no earlier revision"):
        history.rollback_target(svc, revs)  # nothing older than a is good
    again = history.after_gate(svc, "svc-d")  # a forced re-promotion that passed: no longer withdrawn
    assert again == {history.GATED: "svc-d,svc-a", history.ROLLED_BACK: ""}
    legacy = replace(svc, annotations={}, traffic=[TrafficTarget(100, "svc-d")])
    assert history.rollback_target(legacy, revs).id == "svc-b"  # no gate history: the newest older ready one
    many = history.after_gate(replace(svc, annotations={history.GATED: ",".join(f"r{i}" for i in range(40))}), "new")
    assert len(many[history.GATED].split(",")) == history.KEEP and many[history.GATED].startswith("new,r0")


def test_waves_follow_depends_on_in_config_order():
    deps = {"a": [], "b": ["a"], "c": [], "d": ["b", "c"]}
    assert waves(["a", "b", "c", "d"], deps) == [["a", "c"], ["b"], ["d"]]
    assert waves(["x"], {"x": []}) == [["x"]]


class Health(BaseHTTPRequestHandler):
    flaky = 0  # /flaky fails this many times, then answers 200

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/slow"):
            time.sleep(0.6)
        if self.path == "/flaky" and Health.flaky > 0:
            Health.flaky -= 1
            status, body = 503, b"database: \x1b[31mdown\x1b[0m"
        else:
            status, body = (200, b"ok") if self.path != "/bad" else (500, b"broken")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a probe that timed out closed its connection: expected
        pass


@pytest.fixture(scope="module")
def server():
    httpd = QuietServer(("127.0.0.1", 0), Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_gate_needs_consecutive_successes_from_every_path(server):
    Health.flaky = 2
    result = gate.gate(server, ["/health", "/flaky"], successes=2, deadline=10, interval=0.05)
    assert result.passed and result.rounds >= 4  # two failures reset the streak, then two 200s


def test_gate_fails_with_the_last_failing_probe_made_printable(server):
    Health.flaky = 100
    result = gate.gate(server, ["/health", "/flaky"], successes=2, deadline=0.5, interval=0.05)
    assert not result.passed and result.failure.path == "/flaky" and result.failure.status == 503
    assert "\x1b" not in result.failure.describe() and "\\x1b[31mdown" in result.failure.describe()
    Health.flaky = 0


def test_gate_deadline_holds_within_a_round(server):
    started = time.monotonic()
    result = gate.gate(server, ["/bad"] + [f"/slow?{i}" for i in range(6)], successes=1, deadline=1.0, interval=0.05)
    took = time.monotonic() - started
    assert not result.passed and took < 2.0, took  # six 0.6 s probes would take 3.6 s in one round


def test_a_probe_cut_short_by_the_deadline_does_not_hide_the_real_failure(server):
    """/bad answers 500 at once; the /slow probe after it is cut by the gate's deadline: the failure shown is
    the 500 (the revision's answer), not the cut probe's timeout."""
    result = gate.gate(server, ["/bad", "/slow?cut"], successes=1, deadline=0.3, interval=0.05)
    assert not result.passed and result.failure.path == "/bad" and result.failure.status == 500, result.failure


def test_a_real_failure_near_the_deadline_replaces_an_older_one():
    """Only a probe the deadline cut short (a timeout) keeps the older failure: a revision that answered 500
    and then crashed (connection refused, in the gate's last seconds) is reported as refused, not as the 500."""
    httpd = QuietServer(("127.0.0.1", 0), Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"

    def crash() -> None:
        time.sleep(0.3)
        httpd.shutdown()
        httpd.server_close()

    threading.Thread(target=crash, daemon=True).start()
    result = gate.gate(url, ["/bad"], successes=1, deadline=1.0, interval=0.05)
    assert not result.passed and result.failure.status is None, result.failure
    assert result.failure.error == "ConnectError", result.failure


def test_a_leftover_tag_or_a_not_ready_service_is_not_unchanged():
    """A failed rollout can leave its candidate tag, or the service not Ready, while what serves is fine: the
    plan moves all traffic to the serving revision again (after its gate) instead of calling it unchanged."""
    a, b = revision("svc-a", 1), revision("svc-b", 2, ready=False)
    tagged = live([a, b], {"svc-a": 100}, {history.GATED: "svc-a"})
    tagged = replace(tagged, service=replace(tagged.service, traffic=[
        TrafficTarget(percent=100, revision="svc-a"), TrafficTarget(percent=0, revision="svc-b", tag="candidate")]))
    p = plan(desired(), tagged)
    assert p.action == UPDATE and p.target == "svc-a" and not p.new_revision, p
    assert "tag candidate (svc-b)" in p.reason
    not_ready = live([a, b], {"svc-a": 100}, {history.GATED: "svc-a"})
    not_ready = replace(not_ready, service=replace(not_ready.service, ready=False))
    p = plan(desired(), not_ready)
    assert p.action == UPDATE and p.target == "svc-a" and "not Ready" in p.reason, p
