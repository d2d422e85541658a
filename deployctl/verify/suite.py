"""Which checks run, and against which URLs: the glue between the config, the cloud and the runner."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from deployctl import errors
from deployctl.config import Check, Config
from deployctl.context import Context
from deployctl.verify.model import StepReport
from deployctl.verify.runner import OnStep, Runner

DEFAULT_DEADLINE = 60.0


def select(config: Config, services: list[str] | None) -> list[Check]:
    """The checks that touch any of `services` (a cross-service check runs for each service it touches), or
    every check when `services` is None."""
    if services is None:
        return list(config.checks)
    wanted = set(services)
    return [c for c in config.checks if wanted & set(c.services)]


def service_urls(ctx: Context, services: list[str]) -> dict[str, str | errors.DeployctlError]:
    """Each service's Cloud Run URL (where its traffic goes), or why there is none."""
    from deployctl.cloud.run import RunServices

    run = RunServices(ctx.clients, ctx.project, ctx.region)

    def one(name: str) -> str | errors.DeployctlError:
        try:
            svc = run.get(name)
        except errors.NotFound:
            return errors.NotFound(f"service {name} is not deployed", hint=f"deployctl deploy {name}")
        except errors.DeployctlError as e:
            return e
        return svc.uri or errors.CloudError(f"service {name} has no URL yet", hint="deployctl status")

    with ThreadPoolExecutor(max_workers=min(8, len(services) or 1)) as pool:
        return dict(zip(services, pool.map(one, services), strict=True))


def secret_reader(ctx: Context):
    from deployctl.cloud.secrets import SecretStore

    store = SecretStore(ctx.clients, ctx.project)
    return lambda secret_id, version: store.access(secret_id, version).text  # access() registers the value


def run_checks(ctx: Context, checks: list[Check], *, deadline: float = DEFAULT_DEADLINE,
               on_step: OnStep | None = None, urls: dict | None = None) -> list[StepReport]:
    ctx.config, ctx.clients  # noqa: B018 - build once, before threads race to build them
    services = list(dict.fromkeys(s for c in checks for s in c.services))
    urls = urls if urls is not None else service_urls(ctx, services)
    runner = Runner(urls, secret_reader(ctx), deadline=deadline, on_step=on_step)
    return runner.run(checks)


def progress(ctx: Context):
    """An on_step callback reporting each step as it finishes (a failure with its request and answer)."""
    def report(r: StepReport) -> None:
        status = {"passed": "ok", "skipped": "skip"}.get(r.outcome, "fail")
        what = f"HTTP {r.status}" if r.status is not None else r.outcome
        line = f"{r.step} ({r.service}): {r.outcome}, {what}, {r.elapsed * 1000:.0f} ms"
        ctx.progress(r.check, line + (f": {r.message}" if r.failures and r.outcome != "passed" else ""), status,
                     detail=r.outcome == "passed")
    return report
