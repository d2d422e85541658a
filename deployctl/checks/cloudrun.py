"""Cloud Run: the service is Ready, its serving revision healthy, the secret versions it pins still enabled,
and its health endpoints answer in time. A service that is not deployed yet skips these checks."""

from __future__ import annotations

from deployctl.checks.engine import Outcome, Skip, failed, passed, warned
from deployctl.checks.facts import Facts

SLOW = 1.0  # seconds: a health endpoint slower than this is a warning


def _service(f: Facts, service: str):
    svc = f.deployed(service)
    if svc is None:
        raise Skip(f"{service} is not deployed (deployctl deploy {service})")
    return svc


def ready(f: Facts, service: str) -> Outcome:
    svc = _service(f, service)
    if not svc.ready:
        return failed(f"{service} is not Ready: {svc.ready_message or 'no reason given'}",
                      f"deployctl status; fix the cause, then deployctl deploy {service}")
    return passed(f"{service} Ready, serving {', '.join(svc.serving) or '-'}")


def revision(f: Facts, service: str) -> Outcome:
    svc = _service(f, service)
    rev = f.serving_revision(service)
    if rev is None:
        return failed(f"{service} routes traffic to no revision", f"deployctl deploy {service}")
    if not rev.ready:
        return failed(f"serving revision {rev.id} is not ready: {rev.ready_message}", f"deployctl rollback {service}")
    if svc.latest_created and svc.latest_created != svc.latest_ready:
        return warned(f"the newest revision {svc.latest_created} is not ready; traffic stays on {rev.id}",
                      f"read its logs, fix it, deployctl deploy {service}")
    return passed(f"serving revision {rev.id} is ready")


def pinned_secrets(f: Facts, service: str) -> Outcome:
    _service(f, service)
    rev = f.serving_revision(service)
    if rev is None:
        raise Skip("no serving revision")
    bad, evidence = [], []
    for env_name, ref in sorted(rev.secrets.items()):
        sid, _, version = ref.partition(":")
        versions = f.versions(sid)
        if version in ("", "latest"):
            ok = any(v.state == "ENABLED" for v in versions[:1])
            evidence.append(f"{env_name} = {sid}:latest ({'enabled' if ok else 'not enabled'})")
        else:
            state = next((v.state for v in versions if str(v.number) == version), "MISSING")
            ok = state == "ENABLED"
            evidence.append(f"{env_name} = {sid}:{version} ({state.lower()})")
        if not ok:
            bad.append(f"{sid}:{version or 'latest'}")
    if bad:
        return failed(f"revision {rev.id} pins secret versions that are no longer enabled: {', '.join(bad)}; a new "
                      "instance (scale-out, restart) will fail to start", f"deployctl deploy {service}", evidence)
    n = len(rev.secrets)
    return passed(f"{n} pinned secret version{'s' if n != 1 else ''} enabled", evidence)


def health(f: Facts, service: str) -> Outcome:
    from concurrent.futures import ThreadPoolExecutor

    from deployctl.deploy import gate

    svc = _service(f, service)
    paths = f.ctx.config.services[service].health
    if not svc.uri:
        raise Skip("the service has no URL")
    with gate.client(timeout=f.probe_timeout, connections=max(1, len(paths))) as http, \
            ThreadPoolExecutor(max_workers=max(1, len(paths))) as pool:
        results = list(pool.map(lambda path: gate.probe(http, svc.uri, path), paths))
    evidence, worst = [], "pass"
    for r in results:
        if r.status is None:
            evidence.append(f"{r.path}: {r.error}")
            worst = "fail"
            continue
        evidence.append(f"{r.path}: {r.status} in {r.latency_ms:.0f} ms")
        if r.status >= 400:
            worst = "fail"
        elif r.latency_ms > SLOW * 1000 and worst == "pass":
            worst = "warn"
    if worst == "fail":
        return failed(f"a health endpoint of {service} does not answer 2xx", f"deployctl status; logs of {service}",
                      evidence)
    if worst == "warn":
        return warned(f"a health endpoint of {service} is slow (> {SLOW:g}s)", "check the service's latency",
                      evidence)
    return passed(f"{len(paths)} health endpoints answer", evidence)
