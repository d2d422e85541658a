"""What Cloud Endpoints (ESPv2) and API Gateway accept beyond the OpenAPI schema, as findings.

Backend addresses in the project's specs are written `address: ${service-name}` (optionally followed by a
path, `${fiat-gateway}/api`): `deployctl endpoints render` replaces each with the service's deployed Cloud Run
URL. Lint accepts such a placeholder (as a note) so the checked-in spec lints clean.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from deployctl.endpoints import structure
from deployctl.endpoints.findings import Finding, sort
from deployctl.endpoints.load import JsonPath, Spec

TARGETS = ("endpoints", "api-gateway")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PLACEHOLDER = re.compile(r"^\$\{(?P<service>[a-z][-a-z0-9]*)\}(?P<suffix>/\S*)?$")
CONFIG_ID = re.compile(r"^[a-z](?:[-a-z0-9]*[a-z0-9])?$")
CONFIG_ID_MAX = 63
PATH_TRANSLATIONS = ("APPEND_PATH_TO_ADDRESS", "CONSTANT_ADDRESS")
API_KEY_FIX = ("define it as `type: apiKey, name: key, in: query` (the ?key= parameter) or "
               "`type: apiKey, name: x-api-key, in: header`")


@dataclass
class LintReport:
    target: str
    version: str
    config_id: str
    config_id_source: str  # "--config-id" or "info.title"
    findings: list[Finding] = field(default_factory=list)

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)


def operations(data: dict) -> Iterator[tuple[JsonPath, dict]]:
    """(('paths', '/v1/x', 'post'), operation) for every operation of the spec."""
    paths = data.get("paths")
    if not isinstance(paths, dict):
        return
    for route, item in paths.items():
        if isinstance(item, dict):
            for method, op in item.items():  # in document order, so "also used by" points upwards
                if method in METHODS and isinstance(op, dict):
                    yield ("paths", route, method), op


def address_sites(data: dict) -> Iterator[tuple[JsonPath, str]]:
    """Every backend address of the spec: top-level and per-operation x-google-backend (2.0) and
    x-google-api-management backends (3.x), as (JSON path of the address, its value)."""
    top = data.get("x-google-backend")
    if isinstance(top, dict) and isinstance(top.get("address"), str):
        yield ("x-google-backend", "address"), top["address"]
    for at, op in operations(data):
        backend = op.get("x-google-backend")
        if isinstance(backend, dict) and isinstance(backend.get("address"), str):
            yield (*at, "x-google-backend", "address"), backend["address"]
    backends = (data.get("x-google-api-management") or {}).get("backends") if isinstance(
        data.get("x-google-api-management"), dict) else None
    if isinstance(backends, dict):
        for name, backend in backends.items():
            if isinstance(backend, dict) and isinstance(backend.get("address"), str):
                yield ("x-google-api-management", "backends", name, "address"), backend["address"]


def config_id_for(spec: Spec, given: str | None) -> tuple[str, str]:
    """The API Gateway config id: --config-id when given, else a slug of info.title; and which it was."""
    if given:
        return given, "--config-id"
    title = str((spec.data.get("info") or {}).get("title") or "") if isinstance(spec.data.get("info"), dict) else ""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"), "info.title"


def lint(spec: Spec, target: str = "endpoints", config_id: str | None = None) -> LintReport:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")
    cid, source = config_id_for(spec, config_id)
    report = LintReport(target=target, version=spec.version, config_id=cid, config_id_source=source)
    schema = structure.validate(spec)
    found: list[Finding] = []
    if not any(f.rule == "openapi-version" for f in schema):
        found += operation_ids(spec, target)
        found += external_refs(spec)
        if spec.is_v2:
            found += v2_rules(spec, target)
        elif target == "endpoints":
            from deployctl.endpoints.convert import convert_v3_to_v2  # it builds on this module

            found.append(Finding.error(
                "endpoints-swagger2-only", ("openapi",),
                f"Cloud Endpoints (ESPv2) accepts only Swagger 2.0 (OpenAPI 2.0); this spec is OpenAPI {spec.version}",
                "convert it to Swagger 2.0: " + "; ".join(convert_v3_to_v2(spec)) + ". Or deploy it to API "
                "Gateway (--target api-gateway), which takes 3.0 with x-google-api-management backends", spec))
        else:
            found += gateway_v3_rules(spec)
    if target == "api-gateway" or source == "--config-id":
        found += config_id_rules(cid, source, spec)
    found += placeholder_note(spec)
    covered = {f.path for f in found}  # a target rule at the same place says it more precisely
    found += [f for f in schema if f.path not in covered]
    report.findings = sort(found)
    return report


def operation_ids(spec: Spec, target: str) -> list[Finding]:
    out: list[Finding] = []
    seen: dict[str, JsonPath] = {}
    for at, op in operations(spec.data):
        op_id = op.get("operationId")
        if not op_id:
            severity = "error" if target == "endpoints" else "warning"
            out.append(Finding.at(severity, "operation-id-missing", at,
                                  f"{at[2].upper()} {at[1]} has no operationId",
                                  f"add `operationId: {_suggest_id(at)}` (unique in the spec)", spec))
        elif str(op_id) in seen:
            first = seen[str(op_id)]
            out.append(Finding.error("operation-id-unique", (*at, "operationId"),
                                     f"operationId {op_id!r} is also used by {first[2].upper()} {first[1]}",
                                     f"rename one of them, e.g. `operationId: {_suggest_id(at)}`", spec))
        else:
            seen[str(op_id)] = at
    return out


def _suggest_id(at: JsonPath) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", str(at[1])) if w]
    return str(at[2]) + "".join(w[:1].upper() + w[1:] for w in words)


def external_refs(spec: Spec) -> list[Finding]:
    out = []

    def walk(node, at: JsonPath) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                out.append(Finding.error("ref-external", (*at, "$ref"), f"$ref {ref!r} points outside the file",
                                         "inline the definition: the spec is uploaded as one file", spec))
            for k, v in node.items():
                walk(v, (*at, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*at, i))

    walk(spec.data, ())
    return out


def v2_rules(spec: Spec, target: str) -> list[Finding]:
    data, out = spec.data, []
    host = data.get("host")
    if not host and target == "endpoints":
        out.append(Finding.error("host-required", ("host",) if "host" in data else (),
                                 "Cloud Endpoints needs `host`: it is the Endpoints service name",
                                 "add `host: <api-name>.endpoints.<project-id>.cloud.goog`", spec))
    elif host and ("/" in str(host) or ":" in str(host)):
        out.append(Finding.error("host-form", ("host",), f"host {host!r} is a URL; it must be a bare host name",
                                 "drop the scheme, port and path (put a path prefix in basePath)", spec))
    top = data.get("x-google-backend")
    if top is not None:
        out += _backend_object(spec, ("x-google-backend",), top)
    for at, op in operations(data):
        backend = op.get("x-google-backend")
        if backend is not None:
            out += _backend_object(spec, (*at, "x-google-backend"), backend)
        elif top is None:
            out.append(Finding.error(
                "backend-missing", at, f"{at[2].upper()} {at[1]} has no x-google-backend, and there is no "
                "top-level one: the gateway would not know where to send it",
                "add `x-google-backend: {address: ${<service>}}` to the operation (render fills the URL), "
                "or one x-google-backend at the top level", spec))
    out += api_key_rules(spec, data.get("securityDefinitions"), ("securityDefinitions",))
    return out


def _backend_object(spec: Spec, at: JsonPath, backend) -> list[Finding]:
    if not isinstance(backend, dict):
        return [Finding.error("backend-form", at, "in Swagger 2.0 x-google-backend is a mapping with an address",
                              "write `x-google-backend: {address: https://...}`", spec)]
    out = []
    if "address" not in backend:
        out.append(Finding.error("backend-address", at, "x-google-backend has no address",
                                 "add `address: ${<service>}` (render fills the URL) or the backend's https URL",
                                 spec))
    else:
        out += _address(spec, (*at, "address"), backend["address"])
    translation = backend.get("path_translation")
    if translation is not None and translation not in PATH_TRANSLATIONS:
        out.append(Finding.error("backend-path-translation", (*at, "path_translation"),
                                 f"path_translation {translation!r} is not one ESPv2 knows",
                                 f"use one of {', '.join(PATH_TRANSLATIONS)}", spec))
    return out


def _address(spec: Spec, at: JsonPath, address) -> list[Finding]:
    text = str(address)
    if PLACEHOLDER.match(text):
        return []  # one note for all of them: lint() adds it
    if text.startswith("http://"):
        return [Finding.warning("backend-insecure", at, f"backend {text} is plain http: requests travel unencrypted",
                                "use the https URL (Cloud Run serves https)", spec)]
    if not re.match(r"^(https|grpcs?)://[^/\s]+", text):
        return [Finding.error("backend-address", at, f"backend address {text!r} is not an https URL",
                              "use the service's https URL, or `${<service>}` for render to fill", spec)]
    return []


def placeholder_note(spec: Spec) -> list[Finding]:
    sites = [(at, m["service"]) for at, address in address_sites(spec.data) if (m := PLACEHOLDER.match(address))]
    if not sites:
        return []
    names = ", ".join(dict.fromkeys(name for _, name in sites))
    return [Finding.info("backend-placeholder", sites[0][0],
                         f"{len(sites)} backend address(es) are placeholders for {names}",
                         "deploy the output of `deployctl endpoints render`, not this file", spec)]


def api_key_rules(spec: Spec, definitions, at: JsonPath) -> list[Finding]:
    """API-key security: a well-formed apiKey definition, and security requirements that name one."""
    out: list[Finding] = []
    defs = definitions if isinstance(definitions, dict) else {}
    api_keys = {n: d for n, d in defs.items() if isinstance(d, dict) and d.get("type") == "apiKey"}
    if not api_keys:
        out.append(Finding.error("api-key-missing", at if definitions is not None else (),
                                 f"no API-key security scheme in {'.'.join(map(str, at))}", API_KEY_FIX, spec))
    for name, d in api_keys.items():
        where = (d.get("in"), d.get("name"))
        if where not in (("query", "key"), ("header", "x-api-key")):
            out.append(Finding.error("api-key-definition", (*at, name),
                                     f"API key {name!r} is read from {where[0] or '(no `in`)'} {where[1]!r}: the gateway checks "
                                     "keys only as the `key` query parameter or the `x-api-key` header",
                                     API_KEY_FIX, spec))
    top = spec.data.get("security")
    for path, reqs in [(("security",), top)] + [((*a, "security"), op.get("security"))
                                                  for a, op in operations(spec.data)]:
        for i, req in enumerate(reqs if isinstance(reqs, list) else []):
            for scheme in req if isinstance(req, dict) else []:
                if scheme not in defs:
                    out.append(Finding.error("security-undefined", (*path, i, scheme),
                                             f"security names {scheme!r}, which {'.'.join(map(str, at))} "
                                             "does not define", f"define {scheme!r} or use one of: "
                                             f"{', '.join(defs) or '(none defined)'}", spec))
    if top is None:
        for a, op in operations(spec.data):
            if op.get("security") is None:
                out.append(Finding.warning("security-none", a, f"{a[2].upper()} {a[1]} requires no API key",
                                           "add `security: [{<api-key scheme>: []}]` at the top level or on the "
                                           "operation (`security: []` marks it public on purpose)", spec))
    return out


def gateway_v3_rules(spec: Spec) -> list[Finding]:
    data, out = spec.data, []
    if not spec.version.startswith("3.0."):
        out.append(Finding.error("gateway-openapi-version", ("openapi",),
                                 f"API Gateway accepts OpenAPI 2.0 and 3.0.x; this spec is {spec.version}",
                                 "declare `openapi: 3.0.3` and remove 3.1-only features", spec))
    management = data.get("x-google-api-management")
    backends = management.get("backends") if isinstance(management, dict) else None
    if not isinstance(backends, dict) or not backends:
        out.append(Finding.error(
            "gateway-v3-backends", ("x-google-api-management",) if management is not None else (),
            "API Gateway takes an OpenAPI 3.x spec only with backends under x-google-api-management",
            "add `x-google-api-management: {backends: {<name>: {address: ${<service>}, "
            "pathTranslation: APPEND_PATH_TO_ADDRESS, protocol: http/1.1}}}` and name a backend with "
            "`x-google-backend: <name>` at the top level or per operation", spec))
        backends = {}
    for name, backend in backends.items():
        at = ("x-google-api-management", "backends", name)
        if not isinstance(backend, dict) or "address" not in backend:
            out.append(Finding.error("backend-address", at, f"backend {name!r} has no address",
                                     "add `address: ${<service>}` or the backend's https URL", spec))
        else:
            out += _address(spec, (*at, "address"), backend["address"])
    top = data.get("x-google-backend")
    for at, op in operations(data):
        name = op.get("x-google-backend", top)
        where = (*at, "x-google-backend") if "x-google-backend" in op else ("x-google-backend",)
        if name is None:
            if backends:
                out.append(Finding.error("backend-missing", at, f"{at[2].upper()} {at[1]} names no backend",
                                         f"add `x-google-backend: <one of {', '.join(backends)}>`", spec))
        elif not isinstance(name, str):
            out.append(Finding.error("backend-form", where, "in OpenAPI 3.x x-google-backend is the name of a "
                                     "backend under x-google-api-management.backends, not a mapping",
                                     "move the address into x-google-api-management.backends.<name> and write "
                                     "`x-google-backend: <name>`", spec))
        elif backends and name not in backends:
            out.append(Finding.error("backend-unknown", where, f"no backend {name!r} in x-google-api-management",
                                     f"use one of: {', '.join(backends)}", spec))
    components = data.get("components") if isinstance(data.get("components"), dict) else {}
    out += api_key_rules(spec, components.get("securitySchemes"), ("components", "securitySchemes"))
    return out


def config_id_rules(cid: str, source: str, spec: Spec) -> list[Finding]:
    at: JsonPath | str = ("info", "title") if source == "info.title" else "--config-id"
    problems = []
    if not cid:
        problems.append("is empty")
    if len(cid) > CONFIG_ID_MAX:
        problems.append(f"is {len(cid)} characters long (at most {CONFIG_ID_MAX})")
    if cid and not CONFIG_ID.match(cid):
        problems.append("must be lowercase letters, digits and hyphens, start with a letter and not end with '-'")
    if not problems:
        return []
    origin = "given with --config-id" if source == "--config-id" else "made from info.title"
    fix = ("pass a valid --config-id, e.g. --config-id gateway-v1" if source == "--config-id"
           else "pass --config-id NAME, or give info.title a name that starts with a letter and is short")
    return [Finding.error("config-id", at, f"API config id {cid!r} ({origin}) {'; '.join(problems)}", fix, spec)]
