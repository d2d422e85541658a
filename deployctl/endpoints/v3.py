"""OpenAPI 3.x rules. Both targets take 3.0.x and 3.1.x, with the same Google extensions: backends under
x-google-api-management, named per operation (or at the top level) by `x-google-backend: <name>`.

Cloud Endpoints also needs its service name: exactly one server with `x-google-endpoint`, whose URL has the host
`<api>.endpoints.<project>.cloud.goog` (a relative URL has none); it does not take x-google-allow in 3.x.
(Endpoints took only Swagger 2.0 until November 2025; see its openapi-overview and openapi-v3-limitations.)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from deployctl.endpoints.findings import Finding
from deployctl.endpoints.load import Spec
from deployctl.endpoints.rules import PROJECT_PLACEHOLDER, address_finding, api_key_rules, operations

VERSIONS = ("3.0.", "3.1.")
SERVER_FIX = ("add `servers: [{url: \"https://<api-name>.endpoints.${project}.cloud.goog\", x-google-endpoint: {}}]` "
              "(render fills ${project}; the host is the Endpoints service name)")


def rules(spec: Spec, target: str) -> list[Finding]:
    out = _version(spec, target) + _backends(spec)
    if target == "endpoints":
        out += _endpoints_server(spec)
        if "x-google-allow" in spec.data:
            out.append(Finding.error("endpoints-v3-allow", ("x-google-allow",),
                                     "Cloud Endpoints does not take x-google-allow in OpenAPI 3.x",
                                     "declare every path the API serves and remove x-google-allow", spec))
    components = spec.data.get("components") if isinstance(spec.data.get("components"), dict) else {}
    out += api_key_rules(spec, components.get("securitySchemes"), ("components", "securitySchemes"))
    return out


def _version(spec: Spec, target: str) -> list[Finding]:
    if spec.version.startswith(VERSIONS):
        return []
    name = "API Gateway" if target == "api-gateway" else "Cloud Endpoints"
    return [Finding.error(f"{'gateway' if target == 'api-gateway' else 'endpoints'}-openapi-version", ("openapi",),
                          f"{name} accepts OpenAPI 2.0, 3.0.x and 3.1.x; this spec is {spec.version}",
                          "declare `openapi: 3.1.0` (or 3.0.3) and remove features of later versions", spec)]


def _endpoints_server(spec: Spec) -> list[Finding]:
    servers = spec.data.get("servers")
    marked = [(i, s) for i, s in enumerate(servers if isinstance(servers, list) else [])
              if isinstance(s, dict) and "x-google-endpoint" in s]
    if not marked:
        at = ("servers",) if servers is not None else ()
        return [Finding.error("endpoints-v3-server", at, "Cloud Endpoints takes its service name from the one "
                              "server marked with x-google-endpoint, and no server has it", SERVER_FIX, spec)]
    if len(marked) > 1:
        return [Finding.error("endpoints-v3-server", ("servers", marked[1][0], "x-google-endpoint"),
                              f"{len(marked)} servers have x-google-endpoint; Cloud Endpoints takes exactly one",
                              "keep x-google-endpoint on the server whose host is the Endpoints service name", spec)]
    i, server = marked[0]
    url = str(server.get("url") or "")
    host = urlsplit(url.replace(PROJECT_PLACEHOLDER, "project")).hostname
    if not host:
        return [Finding.error("endpoints-v3-server", ("servers", i, "url"),
                              f"the x-google-endpoint server's url {url!r} has no host (relative URLs are not "
                              "supported): the host is the Endpoints service name", SERVER_FIX, spec)]
    return []


def _backends(spec: Spec) -> list[Finding]:
    data, out = spec.data, []
    management = data.get("x-google-api-management")
    backends = management.get("backends") if isinstance(management, dict) else None
    if not isinstance(backends, dict) or not backends:
        out.append(Finding.error(
            "gateway-v3-backends", ("x-google-api-management",) if management is not None else (),
            "in OpenAPI 3.x the gateway finds its backends only under x-google-api-management",
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
            out += address_finding(spec, (*at, "address"), backend["address"])
            if "jwtAudience" not in backend and "disableAuth" not in backend:
                out.append(Finding.warning(
                    "backend-auth", at, f"backend {name!r} sets neither jwtAudience nor disableAuth, which "
                    "Google's 3.x extensions ask for (it would fall back to a default audience)",
                    "say how the gateway calls it: `jwtAudience: <the audience the backend checks>` (a private "
                    "Cloud Run service: its URL), `disableAuth: false` for the default audience, or "
                    "`disableAuth: true` when it takes no Google ID token", spec))
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
    return out
