"""configs/<env>.toml: pydantic models, loading and validation with precise errors (file, field path, what is wrong).

Unknown keys are rejected everywhere: a typo must not silently deploy a default. Types are strict: TOML has
its own integers, floats and booleans, so "8080", "yes" or 1.0 where an integer or a boolean belongs is a
mistake to report, not a value to coerce. Only paths are taken from strings (TOML has no path type).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from deployctl.errors import ConfigError

# Cloud Run service and job ids: lowercase letters, digits, hyphens; start with a letter; at most 49 characters
# for services (the job name `<service>-migrate` must fit in 63).
SERVICE_ID = r"^[a-z](?:[-a-z0-9]{0,47}[a-z0-9])?$"
SECRET_ID = r"^[A-Za-z0-9_-]{1,255}$"
SECRET_REF = r"^[A-Za-z0-9_-]{1,255}(:(latest|[1-9][0-9]{0,9}))?$"
PG_IDENT = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
CONNECTION_NAME = r"^[a-z0-9][-a-z0-9.:]{0,100}:[a-z0-9-]{1,63}:[a-z0-9][-a-z0-9]{0,97}$"

ShortText = Annotated[str, Field(min_length=1, max_length=1024)]
FilePath = Annotated[Path, Field(strict=False)]  # from a TOML string
# An env value may hold another service's URL: "${service:api-key-service}" (resolved at deploy time).
SERVICE_REF = re.compile(r"\$\{service:([^{}]*)\}")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False, strict=True)


class EnvironmentSettings(Model):
    project: Annotated[str, Field(pattern=r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")]
    region: Annotated[str, Field(pattern=r"^[a-z]+-[a-z]+[0-9]$")]
    emulator: bool = False
    terraform_state: FilePath | None = None
    terraform_state_command: ShortText | None = None
    service_account: ShortText | None = None
    deploy_timeout: Annotated[float, Field(gt=0, le=3600)] = 300.0

    @model_validator(mode="after")
    def _one_state_source(self) -> EnvironmentSettings:
        if self.terraform_state and self.terraform_state_command:
            raise ValueError("give terraform_state or terraform_state_command, not both")
        return self


class Network(Model):
    vpc_connector: ShortText | None = None
    egress: Literal["private-ranges-only", "all-traffic"] = "private-ranges-only"


class Instance(Model):
    connection_name: Annotated[str, Field(pattern=CONNECTION_NAME)]
    private_ip: str | None = None
    public_ip: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 5432
    ssl: Literal["require", "verify-ca", "verify-full"] = "require"
    # The instance's server CA (PEM), for verify-ca / verify-full: Cloud SQL's per-instance CA is in no
    # system trust store. Relative paths are from the project root; it becomes the drivers' sslrootcert.
    server_ca: FilePath | None = None

    @field_validator("private_ip", "public_ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            import ipaddress

            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError("is not an IPv4 or IPv6 address") from None  # the value is not repeated
        return v

    @model_validator(mode="after")
    def _ca_for_verify(self) -> Instance:
        if self.ssl != "require" and self.server_ca is None:
            raise ValueError(f"ssl = \"{self.ssl}\" needs server_ca (the instance's server CA certificate, "
                             "e.g. from `gcloud sql instances describe INSTANCE --format='value(serverCaCert.cert)'`)"
                             "; without it the certificate is checked against the system CAs and never verifies")
        return self

    @property
    def name(self) -> str:
        return self.connection_name.rsplit(":", 1)[1]


class Database(Model):
    instance: str
    name: Annotated[str, Field(pattern=PG_IDENT)]
    user: Annotated[str, Field(pattern=PG_IDENT)]
    password_secret: Annotated[str, Field(pattern=SECRET_ID)]
    # The Secret Manager secret holding the service's full connection string (DATABASE_URL).
    url_secret: Annotated[str | None, Field(pattern=SECRET_ID)] = None
    migrations: FilePath | None = None
    driver: Literal["pg8000", "psycopg", "asyncpg"] = "pg8000"
    # direct: host/port of the instance IP; connector: the Cloud SQL Python Connector.
    mode: Literal["direct", "connector"] = "direct"
    ip_type: Literal["private", "public", "psc"] = "private"
    iam_auth: bool = False


class Probe(Model):
    path: Annotated[str, Field(pattern=r"^/[^\s]*$")] = "/health"
    timeout: Annotated[float, Field(gt=0, le=240)] = 2.0
    period: Annotated[float, Field(gt=0, le=240)] = 1.0
    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 30


class Service(Model):
    image: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^\s]+$")]
    # What the container runs. Cloud Run honours a container's command and args; the local cloud runs them.
    command: list[ShortText] | None = None
    args: list[ShortText] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    env: dict[Annotated[str, Field(pattern=ENV_NAME)], Annotated[str, Field(max_length=32768)]] = {}
    secrets: dict[Annotated[str, Field(pattern=ENV_NAME)], Annotated[str, Field(pattern=SECRET_REF)]] = {}
    health: list[Annotated[str, Field(pattern=r"^/[^\s]*$")]] = ["/health"]
    startup_probe: Probe = Probe()
    depends_on: list[str] = []
    min_instances: Annotated[int, Field(ge=0, le=1000)] = 0
    max_instances: Annotated[int, Field(ge=1, le=1000)] = 10
    cpu: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?m?$")] = "1"
    memory: Annotated[str, Field(pattern=r"^[0-9]+(Mi|Gi)$")] = "512Mi"
    service_account: ShortText | None = None
    vpc_connector: ShortText | None = None  # overrides [network].vpc_connector
    ingress: Literal["all", "internal", "internal-and-cloud-load-balancing"] = "all"
    database: Database | None = None

    @model_validator(mode="after")
    def _scaling(self) -> Service:
        if self.min_instances > self.max_instances:
            raise ValueError("min_instances is larger than max_instances")
        overlap = set(self.env) & set(self.secrets)
        if overlap:
            raise ValueError(f"{sorted(overlap)[0]} is both in env and in secrets")
        return self


# --- smoke checks (`deployctl verify`, `deploy --verify`; the engine is deployctl/verify/) -------------------

CHECK_NAME = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
JsonPath = Annotated[str, Field(pattern=r"^[^.\s]+(\.[^.\s]+)*$", max_length=512)]


class Expectation(Model):
    """What a response field must be: present (or absent), equal to a value, match a regex, be of a JSON type."""

    present: bool | None = None
    equals: Any = None
    matches: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    type: Literal["string", "number", "integer", "boolean", "array", "object", "null"] | None = None

    @model_validator(mode="after")
    def _something(self) -> Expectation:
        if not self.model_fields_set:
            raise ValueError("give present, equals, matches or type")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as e:
                raise ValueError(f"matches is not a valid regular expression: {e}") from None
        return self


class CheckStep(Model):
    """One HTTP request against a service's URL, and what its answer must be."""

    name: Annotated[str, Field(pattern=CHECK_NAME)]
    service: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    path: Annotated[str, Field(pattern=r"^/[^\s]*$", max_length=2048)]
    headers: dict[Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")], ShortText] = {}
    body: Any = Field(None, alias="json")  # `json` in the file (a BaseModel attribute name cannot be used)
    expect_status: Annotated[int, Field(ge=100, le=599)] | list[Annotated[int, Field(ge=100, le=599)]] = 200
    expect: dict[JsonPath, Expectation] = {}
    save: dict[Annotated[str, Field(pattern=CHECK_NAME)], JsonPath] = {}
    # Like save, and the value is a credential (an issued API key): registered for redaction when read.
    save_secret: dict[Annotated[str, Field(pattern=CHECK_NAME)], JsonPath] = {}
    timeout: Annotated[float, Field(gt=0, le=300)] = 10.0

    @property
    def statuses(self) -> list[int]:
        return self.expect_status if isinstance(self.expect_status, list) else [self.expect_status]


class Check(Model):
    """A flow of steps run in order; a step may use what earlier steps saved (`${steps.NAME.VAR}`)."""

    name: Annotated[str, Field(pattern=CHECK_NAME)]
    description: Annotated[str, Field(max_length=1024)] = ""
    steps: Annotated[list[CheckStep], Field(min_length=1)]

    @model_validator(mode="after")
    def _references(self) -> Check:
        from deployctl.verify.template import TemplateError, references

        saved: dict[str, set[str]] = {}
        for step in self.steps:
            if step.name in saved:
                raise ValueError(f"step {step.name!r} appears twice")
            try:
                refs = references([step.path, step.headers, step.body,
                                   [e.equals for e in step.expect.values()]])
            except TemplateError as e:
                raise ValueError(f"step {step.name}: {e}") from None
            for ref in refs:
                if ref.kind == "steps" and ref.key not in saved.get(ref.name, ()):
                    raise ValueError(f"step {step.name}: {ref} does not name a value saved by an earlier step")
            saved[step.name] = set(step.save) | set(step.save_secret)
        return self

    @property
    def services(self) -> list[str]:
        return list(dict.fromkeys(s.service for s in self.steps))


class Config(Model):
    environment: EnvironmentSettings
    network: Network = Network()
    instances: dict[str, Instance] = {}
    services: dict[Annotated[str, Field(pattern=SERVICE_ID)], Service] = {}
    checks: list[Check] = []

    # Set by parse(), never by the file (private: not fields, so the file cannot name them).
    _name: str = PrivateAttr("local")
    _path: Path | None = PrivateAttr(None)
    _root: Path | None = PrivateAttr(None)

    @property
    def name(self) -> str:
        """The environment's name (configs/<name>.toml)."""
        return self._name

    @property
    def path(self) -> Path | None:
        """The file this configuration was read from."""
        return self._path

    @property
    def root(self) -> Path | None:
        """The project root (the parent of configs/), which relative paths start from."""
        return self._root

    @model_validator(mode="after")
    def _references(self) -> Config:
        for sname, svc in self.services.items():
            if svc.database and svc.database.instance not in self.instances:
                raise ValueError(f"services.{sname}.database.instance: no instance "
                                 f"{svc.database.instance!r} in [instances]")
            for dep in svc.depends_on:
                if dep not in self.services:
                    raise ValueError(f"services.{sname}.depends_on: no service {dep!r}")
            for key, value in svc.env.items():
                for ref in SERVICE_REF.findall(value):
                    if ref not in self.services:
                        raise ValueError(f"services.{sname}.env.{key}: ${{service:{ref}}} names no service")
                    if ref not in svc.depends_on:
                        raise ValueError(f"services.{sname}.env.{key} uses the URL of {ref}: add {ref!r} to "
                                         f"services.{sname}.depends_on (it is deployed first, so its URL is known)")
        _check_acyclic({n: s.depends_on for n, s in self.services.items()})
        names: set[str] = set()
        for check in self.checks:
            if check.name in names:
                raise ValueError(f"checks: the name {check.name!r} appears twice")
            names.add(check.name)
            for step in check.steps:
                if step.service not in self.services:
                    raise ValueError(f"checks.{check.name}.{step.name}.service: no service {step.service!r}")
        return self

    def service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(self.services) or "none"
            raise ConfigError(f"no service {name!r} in {self.path or self.name}",
                              hint=f"known services: {known}") from None

    def select(self, names: list[str] | None, all_: bool = False) -> list[str]:
        """The services a command acts on: those named, or every one (in config order)."""
        if names:
            for n in names:
                self.service(n)
            return list(dict.fromkeys(names))
        return list(self.services)

    def with_images(self, overrides: list[str]) -> Config:
        """This config with `SERVICE=IMAGE` overrides applied (deploy --image): what CI passes per build."""
        services = dict(self.services)
        for item in overrides:
            name, sep, image = item.partition("=")
            if not sep or not image or any(c.isspace() for c in image):
                raise ConfigError(f"--image {item!r} is not SERVICE=IMAGE",
                                  hint="e.g. --image fiat-gateway=us-central1-docker.pkg.dev/p/r/fiat-gateway:1.3.0")
            services[name] = self.service(name).model_copy(update={"image": image})
        return self.model_copy(update={"services": services})

    def vpc_connector_for(self, name: str) -> str | None:
        return self.services[name].vpc_connector or self.network.vpc_connector

    def service_account_for(self, name: str) -> str | None:
        """What the service's revisions, and its migration and probe jobs, run as."""
        return self.services[name].service_account or self.environment.service_account

    def resolve(self, path: Path) -> Path:
        """A path from the config, relative to the project root."""
        return path if path.is_absolute() else (self.root or Path.cwd()) / path


def _check_acyclic(graph: dict[str, list[str]]) -> None:
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 1:
            cycle = " -> ".join(trail[trail.index(node):] + [node])
            raise ValueError(f"depends_on has a cycle: {cycle}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in graph.get(node, []):
            visit(dep, trail + [node])
        state[node] = 2

    for n in graph:
        visit(n, [])


def config_path(config_dir: Path, env: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", env) or env.startswith("."):
        raise ConfigError(f"invalid environment name {env!r}",
                          hint="use letters, digits, '-', '_' (the file is configs/<env>.toml)")
    return config_dir / f"{env}.toml"


def load(config_dir: Path, env: str) -> Config:
    path = config_path(config_dir, env)
    if not path.exists():
        available = sorted(p.stem for p in config_dir.glob("*.toml")) if config_dir.is_dir() else []
        raise ConfigError(f"no configuration for environment {env!r}: {path} does not exist",
                          hint=(f"environments here: {', '.join(available)}" if available
                                else "pass --config-dir pointing at your configs/ directory"))
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte {e.start})",
                          hint="save the file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}", hint="check the file's permissions") from None
    return parse(text, path=path, env=env)


def parse(text: str, *, path: Path, env: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: TOML syntax error: {e}",
                          hint="fix the syntax at that line (duplicate keys are not allowed)") from None
    except RecursionError:  # tomllib recurses per nested array/table: a hostile file exhausts the stack
        raise ConfigError(f"{path}: invalid configuration: values nest too deeply",
                          hint="a configuration needs a few levels of nesting at most; fix the file") from None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: invalid configuration:\n" + format_validation_error(e),
                          hint=f"fix the fields above, then run `deployctl --env {env} config validate`",
                          details={"errors": _error_list(e)}) from None
    except (ValueError, TypeError, RecursionError) as e:  # e.g. a cycle found while validating
        raise ConfigError(f"{path}: invalid configuration: {e}",
                          hint=f"fix the file, then run `deployctl --env {env} config validate`") from None
    path = path.resolve()
    cfg._name, cfg._path, cfg._root = env, path, path.parent.parent
    return cfg


def _loc(loc: tuple) -> str:
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p == "[key]":
            parts.append(" (the name)")
        elif parts:
            parts.append(f".{p}")
        else:
            parts.append(str(p))
    return "".join(parts) or "(top level)"


def _error_list(e: ValidationError) -> list[dict]:
    out = []
    for err in e.errors(include_url=False, include_input=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not a setting deployctl knows; check the spelling)"
        elif err["type"] == "string_pattern_mismatch":
            msg = f"has an invalid form (must match {err['ctx']['pattern']})"
        out.append({"field": _loc(loc), "message": msg})
    return out


def format_validation_error(e: ValidationError) -> str:
    # Messages never include the input value: it may be a secret (e.g. a password pasted into env).
    return "\n".join(f"  {item['field']}: {item['message']}" for item in _error_list(e))
