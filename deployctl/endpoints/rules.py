"""What Cloud Endpoints (ESPv2) and API Gateway accept beyond the OpenAPI schema, as findings.

Backend addresses in the project's specs are written `address: ${service-name}` (optionally followed by a
path, `${fiat-gateway}/api`), and the Endpoints service name as `host: api.endpoints.${project}.cloud.goog`:
`deployctl endpoints render` fills each from the environment. Lint accepts such placeholders (as a note) so the
checked-in spec lints clean. Both targets take Swagger 2.0 and OpenAPI 3.0.x / 3.1.x; the 3.x rules are in
endpoints/v3.py.
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
PROJECT_PLACEHOLDER = "${project}"
# API Gateway config ids: at most 63 lowercase letters, digits and hyphens, not starting with a hyphen.
CONFIG_ID = re.compile(r"^[a-z0-9][-a-z0-9]*$")
CONFIG_ID_MAX = 63
PATH_TRANSLATIONS = ("APPEND_PATH_TO_ADDRESS", "CONSTANT_ADDRESS")
API_KEY_FIX = ("define it as `type: apiKey, name: key, in: query` (the ?key= parameter) or "
               "`type: apiKey, name: x-api-key, in: header`")
API_KEY_PLACES = (("query", "key"), ("header", "x-api-key"))
# A path template covers a whole segment: /{id} or /{path=**}; /items/overview.{format} is rejected by Google.
WHOLE_SEGMENT = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_.-]*(=\*\*?)?\}$")


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


def project_sites(data: dict) -> Iterator[tuple[JsonPath, str]]:
    """Where the Endpoints service name (with its project) is written: `host` (2.0), servers[].url (3.x)."""
    if isinstance(data.get("host"), str):
        yield ("host",), data["host"]
    servers = data.get("servers")
    for i, server in enumerate(servers if isinstance(servers, list) else []):
        if isinstance(server, dict) and isinstance(server.get("url"), str):
            yield ("servers", i, "url"), server["url"]


def config_id_for(spec: Spec, given: str | None) -> tuple[str, str]:
    """The API Gateway config id: --config-id when given, else a slug of info.title; and which it was."""
    if given:
        return given, "--config-id"
    title = str((spec.data.get("info") or {}).get("title") or "") if isinstance(spec.data.get("info"), dict) else ""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"), "info.title"


def lint(spec: Spec, target: str = "endpoints", config_id: str | None = None,
         services: list[str] | None = None) -> LintReport:
    """Lint `spec` for `target`; `services` (the environment's [services.*], when known) checks placeholders."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")
    from deployctl.endpoints import v3  # it builds on this module

    cid, source = config_id_for(spec, config_id)
    report = LintReport(target=target, version=spec.version, config_id=cid, config_id_source=source)
    schema = structure.validate(spec, data=_placeholders_filled(spec.data))
    found: list[Finding] = []
    if not any(f.rule == "openapi-version" for f in schema):
        found += operation_ids(spec, target)
        found += path_templates(spec)
        found += external_refs(spec)
        if spec.is_v2:
            found += v2_rules(spec, target)
        else:
            found += v3.rules(spec, target)
    if target == "api-gateway" or source == "--config-id":
        found += config_id_rules(cid, source, spec)
    found += placeholder_note(spec, services)
    covered = {f.path for f in found}  # a target rule at the same place says it more precisely
    found += [f for f in schema if f.path not in covered]
    report.findings = sort(found)
    return report


def _placeholders_filled(data: dict) -> dict:
    """A copy of the spec's data as render would make it, for the schema check (only the project matters: the
    backend addresses are extensions, which the schema does not look into)."""
    sites = [(at, value) for at, value in project_sites(data) if PROJECT_PLACEHOLDER in value]
    if not sites:
        return data
    import copy

    out = copy.deepcopy(data)
    for at, value in sites:
        node = out
        for part in at[:-1]:
            node = node[part]
        node[at[-1]] = value.replace(PROJECT_PLACEHOLDER, "project-id")
    return out


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


def path_templates(spec: Spec) -> list[Finding]:
    """Endpoints and API Gateway take a path parameter only as a whole segment (their OpenAPI limitations)."""
    paths = spec.data.get("paths")
    out = []
    for route in paths if isinstance(paths, dict) else []:
        partial = [seg for seg in str(route).split("/") if ("{" in seg or "}" in seg) and not WHOLE_SEGMENT.match(seg)]
        if partial:
            out.append(Finding.error("path-template-segment", ("paths", route),
                                     f"path {route} has a template that is not a whole segment ({partial[0]}): "
                                     "the gateway rejects it",
                                     "make the parameter its own segment, e.g. /items/{id}/overview instead of "
                                     "/items/overview.{format}", spec))
    return out


def _suggest_id(at: JsonPath) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", str(at[1])) if w]
    return str(at[2]) + "".join(w[:1].upper() + w[1:] for w in words)


def external_refs(spec: Spec) -> list[Finding]:
    """A $ref outside the file: the spec is uploaded as one file, and lint never fetches one (structure.py)."""
    out = []

    def walk(node, at: JsonPath) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                out.append(Finding.error("ref-external", (*at, "$ref"),
                                         f"$ref {ref!r} points outside the file (lint does not fetch it)",
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
                                 "add `host: <api-name>.endpoints.${project}.cloud.goog` (render fills ${project})",
                                 spec))
    elif host and ("/" in str(host) or ":" in str(host)):
        out.append(Finding.error("host-form", ("host",), f"host {host!r} is a URL; it must be a bare host name",
                                 "drop the scheme, port and path (put a path prefix in basePath)", spec))
    top = data.get("x-google-backend")
    if top is not None:
        out += _backend_object(spec, ("x-google-backend",), top, top_level=True)
    for at, op in operations(data):
        backend = op.get("x-google-backend")
        if backend is not None:
            out += _backend_object(spec, (*at, "x-google-backend"), backend, top_level=False)
        elif top is None:
            out.append(Finding.error(
                "backend-missing", at, f"{at[2].upper()} {at[1]} has no x-google-backend, and there is no "
                "top-level one: the gateway would not know where to send it",
                "add `x-google-backend: {address: ${<service>}}` to the operation (render fills the URL), "
                "or one x-google-backend at the top level", spec))
    out += api_key_rules(spec, data.get("securityDefinitions"), ("securityDefinitions",))
    return out


def _backend_object(spec: Spec, at: JsonPath, backend, *, top_level: bool) -> list[Finding]:
    if not isinstance(backend, dict):
        return [Finding.error("backend-form", at, "in Swagger 2.0 x-google-backend is a mapping with an address",
                              "write `x-google-backend: {address: https://...}`", spec)]
    out = []
    if "address" not in backend:
        out.append(Finding.error("backend-address", at, "x-google-backend has no address",
                                 "add `address: ${<service>}` (render fills the URL) or the backend's https URL",
                                 spec))
    else:
        out += address_finding(spec, (*at, "address"), backend["address"])
    translation = backend.get("path_translation")
    if translation is not None and translation not in PATH_TRANSLATIONS:
        out.append(Finding.error("backend-path-translation", (*at, "path_translation"),
                                 f"path_translation {translation!r} is not one ESPv2 knows",
                                 f"use one of {', '.join(PATH_TRANSLATIONS)}", spec))
    elif translation is None and not top_level and "address" in backend:
        # The default differs by place: APPEND_PATH_TO_ADDRESS at the top level, CONSTANT_ADDRESS here.
        out.append(Finding.warning(
            "backend-path-translation-default", at,
            "this operation's x-google-backend has no path_translation: on an operation it defaults to "
            "CONSTANT_ADDRESS (every request goes to the address itself; path parameters become query "
            "parameters), unlike the top-level default APPEND_PATH_TO_ADDRESS",
            "say which you mean: `path_translation: CONSTANT_ADDRESS` or `APPEND_PATH_TO_ADDRESS`", spec))
    return out


def address_finding(spec: Spec, at: JsonPath, address) -> list[Finding]:
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


def placeholder_note(spec: Spec, services: list[str] | None = None) -> list[Finding]:
    """One note for the placeholders render fills; a warning for a ${service} the environment does not have."""
    out: list[Finding] = []
    sites = [(at, m["service"]) for at, address in address_sites(spec.data) if (m := PLACEHOLDER.match(address))]
    hosts = [at for at, value in project_sites(spec.data) if PROJECT_PLACEHOLDER in value]
    if sites or hosts:
        names = list(dict.fromkeys(name for _, name in sites))
        what = [f"{len(sites)} backend address(es) for {', '.join(names)}"] if sites else []
        what += [f"the project in {'host' if hosts[0] == ('host',) else 'servers[].url'}"] if hosts else []
        out.append(Finding.info("backend-placeholder", (sites[0][0] if sites else hosts[0]),
                                f"placeholders: {' and '.join(what)}",
                                "deploy the output of `deployctl endpoints render`, not this file", spec))
    if services is not None:
        for at, name in sites:
            if name not in services:
                out.append(Finding.warning(
                    "backend-unknown-service", at, f"${{{name}}} names no service of this environment's "
                    "[services.*], so render cannot fill it", f"use one of: {', '.join(services) or '(none)'}",
                    spec))
    return out


def api_key_rules(spec: Spec, definitions, at: JsonPath) -> list[Finding]:
    """API-key security: a well-formed apiKey definition, and security requirements that name one."""
    out: list[Finding] = []
    defs = definitions if isinstance(definitions, dict) else {}
    api_keys = {n: d for n, d in defs.items() if isinstance(d, dict) and d.get("type") == "apiKey"}
    if not api_keys:
        others = [n for n, d in defs.items() if isinstance(d, dict)]
        where = at if definitions is not None else ()
        if others:  # e.g. JWT (oauth2 / x-google-issuer) or Google ID tokens: a choice, not a mistake
            out.append(Finding.warning("api-key-missing", where, f"no API-key scheme in {'.'.join(map(str, at))}: "
                                       f"callers are checked only by {', '.join(others)}",
                                       "if keys are wanted too, " + API_KEY_FIX, spec))
        else:
            out.append(Finding.error("api-key-missing", where,
                                     f"no API-key security scheme in {'.'.join(map(str, at))}", API_KEY_FIX, spec))
    for name, d in api_keys.items():
        place = d.get("in")
        key_name = d.get("name")
        if isinstance(key_name, str) and place == "header":
            key_name = key_name.lower()  # HTTP header names are case-insensitive: X-API-Key is x-api-key
        if (place, key_name) not in API_KEY_PLACES:
            out.append(Finding.error("api-key-definition", (*at, name),
                                     f"API key {name!r} is read from {place or '(no `in`)'} {d.get('name')!r}: the "
                                     "gateway checks keys only as the `key` query parameter or the `x-api-key` header",
                                     API_KEY_FIX, spec))
    top = spec.data.get("security")
    for path, reqs in [(("security",), top)] + [((*a, "security"), op.get("security"))
                                                  for a, op in operations(spec.data)]:
        keyed = [n for req in (reqs if isinstance(reqs, list) else []) if isinstance(req, dict)
                 for n in req if n in api_keys]
        if keyed and len(reqs) > 1:
            out.append(Finding.error("security-api-key-or", path,
                                     f"security lists {len(reqs)} alternatives and one uses the API key "
                                     f"{keyed[0]!r}: the gateway does not support OR with an API key",
                                     "require them together in one requirement object "
                                     f"(`- {{{keyed[0]}: [], <other>: []}}`), or keep only one", spec))
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


def config_id_rules(cid: str, source: str, spec: Spec) -> list[Finding]:
    """The config id is a gcloud argument, not part of the spec: an error only when given with --config-id; the
    one made from info.title is a note (pass --config-id when creating the config)."""
    at: JsonPath | str = ("info", "title") if source == "info.title" else "--config-id"
    problems = []
    if not cid:
        problems.append("is empty")
    if len(cid) > CONFIG_ID_MAX:
        problems.append(f"is {len(cid)} characters long (at most {CONFIG_ID_MAX})")
    if cid and not CONFIG_ID.match(cid):
        problems.append("must be lowercase letters, digits and hyphens, and not start with a hyphen")
    if not problems:
        return []
    if source == "--config-id":
        return [Finding.error("config-id", at, f"API config id {cid!r} (given with --config-id) {'; '.join(problems)}",
                              "pass a valid --config-id, e.g. --config-id gateway-v1", spec)]
    return [Finding.info("config-id", at, f"an API config id made from info.title ({cid!r}) {'; '.join(problems)}",
                         "pass a valid id to `gcloud api-gateway api-configs create` (and to lint with --config-id)",
                         spec)]
