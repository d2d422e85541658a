"""`deployctl config validate|show`."""

from __future__ import annotations

from typing import ClassVar

from deployctl import views
from deployctl.context import Context
from deployctl.results import Result


class ValidateResult(Result):
    schema_name: ClassVar[str] = "config/validate"
    environment: str
    path: str
    services: list[str]
    instances: list[str]

    def view(self) -> list[views.Block]:
        return [views.Line(f"{self.path}: valid ({len(self.services)} services, "
                           f"{len(self.instances)} instances)", "ok")]


class ShowResult(Result):
    schema_name: ClassVar[str] = "config/show"
    environment: str
    path: str
    config: dict

    def view(self) -> list[views.Block]:
        env = self.config["environment"]
        blocks: list[views.Block] = [views.Fields(
            [("file", self.path), ("project", env["project"]), ("region", env["region"]),
             ("local cloud", "yes" if env["emulator"] else "no"),
             ("vpc connector", self.config["network"]["vpc_connector"] or "-")],
            title=f"environment {self.environment}")]
        rows = []
        for name, svc in self.config["services"].items():
            db = svc.get("database")
            rows.append([name, svc["image"], ", ".join(svc["health"]),
                         f"{db['user']}@{db['instance']}/{db['name']}" if db else views.dim("none"),
                         ", ".join(f"{k}={v}" for k, v in svc["secrets"].items()) or "-"])
        blocks.append(views.Table(["service", "image", "health", "database", "secret env (by reference)"],
                                  rows, title="services"))
        return blocks


def validate(ctx: Context) -> ValidateResult:
    cfg = ctx.config
    return ValidateResult(environment=ctx.env, path=str(cfg.path), services=list(cfg.services),
                          instances=list(cfg.instances))


def show(ctx: Context) -> ShowResult:
    # The config holds secret *references* (names), never values; env values are shown as written.
    cfg = ctx.config
    return ShowResult(environment=ctx.env, path=str(cfg.path), config=cfg.model_dump(mode="json"))
