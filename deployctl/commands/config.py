"""`deployctl config validate|show`."""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import BaseModel

from deployctl import redact, views
from deployctl.context import Context
from deployctl.results import Result

# An env value under a secret's name, or a URL with a password in it, is a secret written into the config by
# mistake: shown masked, and validate says where it belongs. Names are read by their _-separated words, so
# API_KEY_SERVICE_URL (a URL of the api-key service) is not API_KEY.
_SECRET_WORD = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|DSN|CREDENTIALS?)S?$")
_KEY = re.compile(r"\w*KEYS?$")  # KEY, APIKEY, ...: a key only as the name's last word, or before its format
_KEY_FORMATS = {"PEM", "JSON", "B64", "BASE64", "DER", "HEX", "DATA", "VALUE"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^?#]*$")
SERVICE_URL = re.compile(r"^\$\{service:[^{}]*\}$")


def secret_name(name: str) -> bool:
    words = [w for w in re.split(r"[_\-.]+", name.upper()) if w]
    if any(_SECRET_WORD.search(w) for w in words) or "DATABASE_URL" in "_".join(words):
        return True
    return any(_KEY.fullmatch(w) and all(rest in _KEY_FORMATS for rest in words[i + 1:]) for i, w in enumerate(words))


def _plain(value: str) -> bool:
    """A value that cannot be a secret whatever its name: another service's URL, or a URL without userinfo
    password or query (the password case is a connection string, flagged on its own)."""
    from deployctl import dsn

    return bool(SERVICE_URL.match(value)) or (bool(_URL.match(value)) and not dsn.has_password(value))


class ConfigWarning(BaseModel):
    code: str
    field: str
    message: str
    hint: str


class ValidateResult(Result):
    schema_name: ClassVar[str] = "config/validate"
    environment: str
    path: str
    services: list[str]
    instances: list[str]
    warnings: list[ConfigWarning] = []

    def view(self) -> list[views.Block]:
        blocks: list[views.Block] = [views.Line(f"{self.path}: valid ({len(self.services)} services, "
                                                f"{len(self.instances)} instances)", "ok")]
        for w in self.warnings:
            blocks += [views.Note(f"warning: {w.field}: {w.message}"), views.Note(f"  next: {w.hint}", "dim")]
        return blocks


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
                         ", ".join(f"{k}={v}" for k, v in svc["env"].items()) or "-",
                         ", ".join(f"{k}={v}" for k, v in svc["secrets"].items()) or "-"])
        blocks.append(views.Table(["service", "image", "health", "database", "env", "secret env (by reference)"],
                                  rows, title="services"))
        return blocks


def _secret_like(name: str, value: str) -> str | None:
    """Why an env value looks like a secret (registering it for redaction), or None."""
    from deployctl import dsn

    if secret_name(name) and not _plain(value):
        redact.register(value)
        return "its name says it holds a secret"
    if dsn.has_password(value):
        try:
            dsn.parse(value)  # registers the password in its forms
        except dsn.DsnError:
            pass  # registered before parsing failed
        return "it is a connection string with a password"
    return None


def _masked(name: str, value: str) -> str:
    from deployctl import dsn

    if dsn.has_password(value):
        return dsn.mask(value)  # host and database stay readable
    return redact.MASK if secret_name(name) and not _plain(value) else value


def validate(ctx: Context) -> ValidateResult:
    cfg = ctx.config
    warnings = []
    for sname, svc in cfg.services.items():
        for key, value in svc.env.items():
            why = _secret_like(key, value)
            if why:
                warnings.append(ConfigWarning(
                    code="secret-in-env", field=f"services.{sname}.env.{key}",
                    message=f"looks like a secret ({why}): env values are plain text in the config file, in "
                            "the Cloud Run revision and in `config show`",
                    hint=f"store it in Secret Manager (deployctl secrets set SECRET) and reference it: "
                         f"[services.{sname}] secrets = {{ {key} = \"SECRET:latest\" }}"))
    return ValidateResult(environment=ctx.env, path=str(cfg.path), services=list(cfg.services),
                          instances=list(cfg.instances), warnings=warnings)


def show(ctx: Context) -> ShowResult:
    # The config holds secret *references* (names); an env value that looks like a secret is masked.
    cfg = ctx.config
    data = cfg.model_dump(mode="json")
    for sname, svc in cfg.services.items():
        for key, value in svc.env.items():
            _secret_like(key, value)
        data["services"][sname]["env"] = {k: _masked(k, v) for k, v in svc.env.items()}
    return ShowResult(environment=ctx.env, path=str(cfg.path), config=data)
