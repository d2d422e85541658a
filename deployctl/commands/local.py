"""`deployctl local up|down|ps` and `deployctl emulator serve`: the local cloud's lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from deployctl import views
from deployctl.context import Context
from deployctl.errors import UsageError
from deployctl.results import Result


class UpResult(Result):
    schema_name: ClassVar[str] = "local/up"
    grpc: str
    rest: str
    pid: int
    state_dir: str
    instances: dict[str, str | None]  # name -> private IP
    terraform_state: str

    def view(self) -> list[views.Block]:
        items = [("emulator", f"{self.grpc} (pid {self.pid})"), ("cloud sql connector API", self.rest),
                 ("state", self.state_dir), ("terraform state", self.terraform_state)]
        items += [(f"instance {k}", f"private IP {v}") for k, v in self.instances.items()]
        return [views.Fields(items, title="local cloud is up")]


def _describe(item: dict) -> str:
    what = item.get("service") or item.get("job") or item.get("instance") or item.get("argv0") or ""
    return f"{item.get('kind', 'process')} {what.rsplit('/', 1)[-1]} (pid {item.get('pid')})".replace("  ", " ")


class DownResult(Result):
    schema_name: ClassVar[str] = "local/down"
    was_running: bool
    purged: bool
    ended: list[dict] = []  # what a killed emulator had left running, now ended

    def view(self) -> list[views.Block]:
        what = "stopped the local cloud" if self.was_running else "the local cloud was not running"
        blocks: list[views.Block] = [views.Line(what + ("; state and databases deleted" if self.purged else ""),
                                                "ok")]
        if self.ended:
            blocks.append(views.Line(f"ended what a crashed emulator had left running: "
                                     f"{', '.join(_describe(i) for i in self.ended)}", "ok"))
        return blocks


class PsResult(Result):
    schema_name: ClassVar[str] = "local/ps"
    running: bool
    grpc: str | None = None
    pid: int | None = None
    instances: list[dict] = []
    services: list[dict] = []
    leftovers: list[dict] = []  # not running, but a crashed emulator's processes and clusters still are

    def view(self) -> list[views.Block]:
        if not self.running and self.leftovers:
            return [views.Line(f"the local cloud is not running, but a crashed emulator left "
                               f"{len(self.leftovers)} process(es) running: "
                               f"{', '.join(_describe(i) for i in self.leftovers)}; `deployctl local up` or "
                               "`deployctl local down` ends them", "warn")]
        if not self.running:
            return [views.Line("the local cloud is not running (start it: deployctl local up)", "warn")]
        blocks: list[views.Block] = [views.Line(f"emulator {self.grpc} (pid {self.pid})", "ok")]
        if self.instances:
            blocks.append(views.Table(["instance", "private IP", "state"],
                                      [[i["name"], i["private_ip"], i["state"]] for i in self.instances]))
        if self.services:
            blocks.append(views.Table(["service", "serving revision", "ready", "uri"],
                                      [[s["name"], s["revision"], views.ok("yes") if s["ready"] else
                                        views.fail("no"), s["uri"]] for s in self.services]))
        return blocks


def _require_local(ctx: Context) -> None:
    if not ctx.config.environment.emulator:
        raise UsageError(f"environment {ctx.env!r} is not a local cloud (emulator = false)",
                         hint="use --env local, or set emulator = true in its [environment]")


def up(ctx: Context) -> UpResult:
    from deployctl.cloud.sqladmin import SqlAdmin
    from deployctl.localcloud.lifecycle import ensure_running

    _require_local(ctx)
    try:
        endpoint = ensure_running(ctx, compare_config=True)  # a changed config is provisioned
    except KeyboardInterrupt:
        raise _up_interrupted(ctx) from None
    admin = SqlAdmin(ctx.clients, ctx.project)
    instances = {i.name: i.private_ip for i in admin.list_instances()}
    return UpResult(grpc=endpoint.grpc, rest=endpoint.rest, pid=endpoint.pid, state_dir=str(ctx.state_dir),
                    instances=instances, terraform_state=str(ctx.terraform_state_path()))


def _up_interrupted(ctx: Context):
    """Ctrl-C during `local up`: the emulator runs in its own session, so it keeps running (and `local down`
    stops it); provisioning is idempotent, so `local up` again finishes it."""
    from deployctl import interrupt
    from deployctl.localcloud.lifecycle import find

    endpoint = find(ctx.state_dir)
    provisioned = (ctx.state_dir / "provisioned.json").exists()
    done = [f"the emulator is running at {endpoint.grpc} (pid {endpoint.pid}; `deployctl local down` stops it)"
            ] if endpoint else []
    not_done = [] if provisioned else ["provisioning (instances, databases, users, secrets) did not finish"]
    if endpoint is None:
        not_done.insert(0, "the emulator was not confirmed up (it may still be starting)")
    return interrupt.Cancelled(done, not_done)


def down(ctx: Context, purge: bool = False) -> DownResult:
    from deployctl.localcloud.lifecycle import down as stop_all

    _require_local(ctx)
    if purge and not ctx.confirm(f"delete the local cloud's state and databases in {ctx.state_dir}?"):
        raise UsageError("not purged", hint="run again and confirm, or pass --yes")
    outcome = stop_all(ctx.state_dir, ctx.project_root, purge=purge)
    return DownResult(was_running=outcome["was_running"], purged=purge, ended=outcome["ended"])


def ps(ctx: Context) -> PsResult:
    from deployctl.cloud.run import RunServices
    from deployctl.cloud.sqladmin import SqlAdmin
    from deployctl.localcloud.lifecycle import find

    _require_local(ctx)
    endpoint = find(ctx.state_dir)
    if endpoint is None:
        from deployctl.localcloud.lifecycle import leftovers

        return PsResult(running=False, leftovers=leftovers(ctx.state_dir, ctx.project_root))
    instances = [{"name": i.name, "private_ip": i.private_ip, "state": i.state}
                 for i in SqlAdmin(ctx.clients, ctx.project).list_instances()]
    services = [{"name": s.id, "revision": ", ".join(s.serving) or "-", "ready": s.ready, "uri": s.uri}
                for s in RunServices(ctx.clients, ctx.project, ctx.region).list()]
    return PsResult(running=True, grpc=endpoint.grpc, pid=endpoint.pid, instances=instances, services=services)


class ServeResult(Result):
    schema_name: ClassVar[str] = "emulator/serve"
    state_dir: str

    def view(self) -> list[views.Block]:
        return [views.Line("the local cloud stopped", "ok")]


def serve(ctx: Context, host: str, port: int, state_dir: Path | None,
          on_ready: Callable[[str, str], None]) -> ServeResult:
    """Run the emulator in this process until SIGTERM/SIGINT; on_ready(grpc address, REST address)."""
    from deployctl.emulator.server import StateDirBusy
    from deployctl.emulator.server import serve as run_server

    target = (state_dir or ctx.state_dir).resolve()
    try:
        run_server(target, host=host, port=port, project_root=ctx.project_root,
                   on_ready=lambda emu: on_ready(emu.address, emu.rest_address))
    except StateDirBusy as e:
        raise UsageError(str(e), code="state-dir-in-use",
                         hint="use the running one (`deployctl local ps`), stop it (`deployctl local down`), or "
                              "pass another --state-dir") from None
    return ServeResult(state_dir=str(target))
